//! The provider's encrypted JSON keystore (the Web3 Secret Storage format, version 3), as
//! geth, Parity (Brizo's `PARITY_KEYFILE`), Foundry and MetaMask write it: a key derived from the
//! password with scrypt or PBKDF2, a Keccak-256 MAC over the ciphertext, and the private key
//! encrypted with AES-128-CTR.
//!
//! Read here rather than through alloy's `signer-keystore` (eth-keystore 0.5, last released in
//! 2022): that crate brought a second sha3, keccak and thiserror into every build. Only
//! decryption is needed; the primitives are the RustCrypto crates already in the tree.

use std::path::Path;

use aes::cipher::{KeyIvInit, StreamCipher};
use alloy::primitives::keccak256;
use serde::Deserialize;
use zeroize::Zeroizing;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

#[derive(Deserialize)]
struct Keystore {
    version: u32,
    // Older geth and Parity files spell it with a capital C.
    #[serde(alias = "Crypto")]
    crypto: Crypto,
}

#[derive(Deserialize)]
struct Crypto {
    cipher: String,
    cipherparams: CipherParams,
    #[serde(with = "hex::serde")]
    ciphertext: Vec<u8>,
    #[serde(flatten)]
    kdf: Kdf,
    #[serde(with = "hex::serde")]
    mac: Vec<u8>,
}

#[derive(Deserialize)]
struct CipherParams {
    #[serde(with = "hex::serde")]
    iv: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(tag = "kdf", content = "kdfparams", rename_all = "lowercase")]
enum Kdf {
    Scrypt {
        dklen: usize,
        n: u64,
        r: u32,
        p: u32,
        #[serde(with = "hex::serde")]
        salt: Vec<u8>,
    },
    Pbkdf2 {
        dklen: usize,
        c: u32,
        prf: String,
        #[serde(with = "hex::serde")]
        salt: Vec<u8>,
    },
}

/// The private key in the keystore at `path`. Errors say what is wrong with the file or that
/// the password does not match; they never include the password or the key.
pub fn decrypt(path: &Path, password: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let keystore: Keystore = serde_json::from_slice(&text)
        .map_err(|e| format!("is not a JSON keystore (Web3 Secret Storage v3): {e}"))?;
    if keystore.version != 3 {
        return Err(format!(
            "is a version {} keystore; only version 3 is read",
            keystore.version
        ));
    }
    decrypt_crypto(&keystore.crypto, password.as_bytes())
}

fn decrypt_crypto(crypto: &Crypto, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    if crypto.cipher != "aes-128-ctr" {
        return Err(format!(
            "uses the cipher {:?}; only aes-128-ctr is read",
            crypto.cipher
        ));
    }
    if crypto.cipherparams.iv.len() != 16 {
        return Err("has an iv that is not 16 bytes".into());
    }
    let derived = derive(&crypto.kdf, password)?;
    // The MAC binds the password to this ciphertext: the second half of the derived key's
    // first 32 bytes, then the ciphertext.
    let mut mac_input = Zeroizing::new(derived[16..32].to_vec());
    mac_input.extend_from_slice(&crypto.ciphertext);
    if keccak256(&*mac_input).as_slice() != crypto.mac.as_slice() {
        return Err("cannot be opened with this password (its MAC does not match)".into());
    }
    let mut key = Zeroizing::new(crypto.ciphertext.clone());
    Aes128Ctr::new(
        derived[..16].into(),
        crypto.cipherparams.iv.as_slice().into(),
    )
    .apply_keystream(&mut key);
    Ok(key)
}

fn derive(kdf: &Kdf, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    match kdf {
        Kdf::Scrypt {
            dklen,
            n,
            r,
            p,
            salt,
        } => {
            check_dklen(*dklen)?;
            if !n.is_power_of_two() || *n < 2 {
                return Err(format!("has scrypt n = {n}, which is not a power of two"));
            }
            let params = scrypt::Params::new(n.trailing_zeros() as u8, *r, *p, *dklen)
                .map_err(|e| format!("has scrypt parameters that cannot be used: {e}"))?;
            let mut out = Zeroizing::new(vec![0; *dklen]);
            scrypt::scrypt(password, salt, &params, &mut out)
                .map_err(|e| format!("has scrypt parameters that cannot be used: {e}"))?;
            Ok(out)
        }
        Kdf::Pbkdf2 {
            dklen,
            c,
            prf,
            salt,
        } => {
            check_dklen(*dklen)?;
            if prf != "hmac-sha256" {
                return Err(format!(
                    "uses the PBKDF2 function {prf:?}; only hmac-sha256 is read"
                ));
            }
            let mut out = Zeroizing::new(vec![0; *dklen]);
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, *c, &mut out);
            Ok(out)
        }
    }
}

/// The first 16 bytes are the AES key and the next 16 go into the MAC.
fn check_dklen(dklen: usize) -> Result<(), String> {
    if (32..=64).contains(&dklen) {
        Ok(())
    } else {
        Err(format!(
            "derives a {dklen}-byte key; 32 to 64 bytes are read"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keystores")
            .join(name)
    }

    /// The PBKDF2 test vector of the Web3 Secret Storage Definition.
    #[test]
    fn the_specification_pbkdf2_vector_opens() {
        let key = decrypt(&fixture("spec-pbkdf2.json"), "testpassword").unwrap();
        assert_eq!(
            hex::encode(&*key),
            "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d"
        );
        let wrong = decrypt(&fixture("spec-pbkdf2.json"), "wrongtestpassword").unwrap_err();
        assert!(wrong.contains("MAC does not match"), "{wrong}");
        // Older geth and Parity files name the section "Crypto".
        let dir = tempfile::tempdir().unwrap();
        let capital = dir.path().join("capital.json");
        let spec = std::fs::read_to_string(fixture("spec-pbkdf2.json")).unwrap();
        std::fs::write(&capital, spec.replace("\"crypto\"", "\"Crypto\"")).unwrap();
        assert_eq!(*decrypt(&capital, "testpassword").unwrap(), *key);
    }

    /// A geth-style scrypt keystore (n = 8192, r = 8, p = 1), as eth-keystore's tests carry it.
    #[test]
    fn a_scrypt_keystore_opens() {
        let key = decrypt(&fixture("geth-scrypt.json"), "grOQ8QDnGHvpYJf").unwrap();
        assert_eq!(
            hex::encode(&*key),
            "80d3a6ed7b24dcd652949bc2f3827d2f883b3722e3120b15a93a2e0790f03829"
        );
        let wrong = decrypt(&fixture("geth-scrypt.json"), "thisisnotrandom").unwrap_err();
        assert!(wrong.contains("MAC does not match"), "{wrong}");
    }

    #[test]
    fn files_it_cannot_read_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let spec = std::fs::read_to_string(fixture("spec-pbkdf2.json")).unwrap();
        let cases = [
            (
                spec.replace("\"version\" : 3", "\"version\" : 4"),
                "version 4",
            ),
            (spec.replace("aes-128-ctr", "aes-128-cbc"), "aes-128-cbc"),
            (spec.replace("hmac-sha256", "hmac-sha512"), "hmac-sha512"),
            (
                spec.replace("\"dklen\" : 32", "\"dklen\" : 16"),
                "16-byte key",
            ),
            (
                spec.replace("\"kdf\" : \"pbkdf2\"", "\"kdf\" : \"argon2\""),
                "not a JSON keystore",
            ),
            ("not json".to_string(), "not a JSON keystore"),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("{i}.json"));
            std::fs::write(&path, text).unwrap();
            let error = decrypt(&path, "testpassword").unwrap_err();
            assert!(error.contains(expected), "case {i}: {error}");
        }
        let scrypt = std::fs::read_to_string(fixture("geth-scrypt.json")).unwrap();
        let path = dir.path().join("n.json");
        std::fs::write(&path, scrypt.replace("\"n\": 8192", "\"n\": 8000")).unwrap();
        let error = decrypt(&path, "grOQ8QDnGHvpYJf").unwrap_err();
        assert!(error.contains("not a power of two"), "{error}");
        let missing = decrypt(&dir.path().join("absent.json"), "x").unwrap_err();
        assert!(missing.contains("cannot be read"), "{missing}");
    }
}
