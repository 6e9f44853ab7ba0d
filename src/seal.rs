//! Results only the consumer can read: each job's outputs and log are encrypted with a fresh
//! random content key, and that key is sealed to the consumer's secp256k1 public key with
//! ECIES (the format PyPI `eciespy` opens). Files of any size are encrypted in constant
//! memory with AES-256-GCM in the STREAM construction (a 32-bit big-endian chunk counter and
//! a last-chunk flag in the nonce), so a truncated, reordered or spliced file does not open.
//! The format is written down in docs/encryption.md for consumers in other languages.

use std::io::{Read, Write};
use std::path::Path;

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, KeyInit};
use sha2::{Digest as _, Sha256};

use crate::proof::digest::Digest;

/// The first bytes of an encrypted file: the format and its version.
pub const MAGIC: &[u8; 8] = b"BRIZOE1\n";
/// Plaintext bytes per chunk; every chunk but the last holds exactly this many.
pub const CHUNK: usize = 64 * 1024;
/// AES-GCM's tag, appended to each chunk.
const TAG: usize = 16;
/// The nonce's part chosen per file; the STREAM counter and flag take the other 5 bytes.
const NONCE_PREFIX: usize = 7;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("not a secp256k1 public key (65 bytes 04…, or 33 bytes 02…/03…, in hex)")]
    BadPublicKey,
    #[error("the sealed key does not open with this private key")]
    WrongKey,
    #[error("not a brizo encrypted file (no {MAGIC:?} header)")]
    NotSealed,
    #[error("the file was altered or cut short (a chunk does not authenticate)")]
    Tampered,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A job's content key: 32 random bytes, never stored in the clear.
#[derive(Clone)]
pub struct ContentKey([u8; 32]);

impl ContentKey {
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The key sealed to `public_key` (SEC1 bytes): what the consumer downloads.
    pub fn seal(&self, public_key: &[u8]) -> Result<Vec<u8>, SealError> {
        ecies::encrypt(public_key, &self.0).map_err(|_| SealError::BadPublicKey)
    }

    /// Opens a sealed key with the consumer's private key.
    pub fn open(sealed: &[u8], secret: &[u8; 32]) -> Result<Self, SealError> {
        let key = ecies::decrypt(secret, sealed).map_err(|_| SealError::WrongKey)?;
        let key: [u8; 32] = key.try_into().map_err(|_| SealError::WrongKey)?;
        Ok(Self(key))
    }

    /// Encrypts `src` into `dst`; returns the digests of the plaintext and the ciphertext.
    pub fn encrypt_file(&self, src: &Path, dst: &Path) -> Result<(Digest, Digest), SealError> {
        let mut input = std::fs::File::open(src)?;
        let mut output = Hashed::new(std::io::BufWriter::new(std::fs::File::create(dst)?));
        let prefix: [u8; NONCE_PREFIX] = rand::random();
        output.write_all(MAGIC)?;
        output.write_all(&prefix)?;
        let cipher = Aes256Gcm::new(&self.0.into());
        let mut stream = EncryptorBE32::from_aead(cipher, &prefix.into());
        let (mut plain, mut plain_size) = (Sha256::new(), 0u64);
        let mut current = read_chunk(&mut input)?;
        loop {
            plain.update(&current);
            plain_size += current.len() as u64;
            // One chunk of look-ahead: the last chunk is flagged as such.
            let next = if current.len() == CHUNK {
                read_chunk(&mut input)?
            } else {
                vec![]
            };
            if next.is_empty() {
                let sealed = stream
                    .encrypt_last(current.as_slice())
                    .map_err(|_| SealError::Tampered)?;
                output.write_all(&sealed)?;
                break;
            }
            let sealed = stream
                .encrypt_next(current.as_slice())
                .map_err(|_| SealError::Tampered)?;
            output.write_all(&sealed)?;
            current = next;
        }
        let cipher_digest = output.finish()?;
        Ok((
            Digest {
                size: plain_size,
                sha256: hex::encode(plain.finalize()),
            },
            cipher_digest,
        ))
    }

    /// Decrypts `src` into `dst`; returns the plaintext's digest. Nothing of a file that does
    /// not authenticate is left at `dst`.
    pub fn decrypt_file(&self, src: &Path, dst: &Path) -> Result<Digest, SealError> {
        let result = self.decrypt_into(src, dst);
        if result.is_err() {
            let _ = std::fs::remove_file(dst);
        }
        result
    }

    /// Decrypts a small ciphertext held in memory (a log).
    pub fn decrypt_bytes(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut plain = Vec::new();
        self.decrypt_stream(&mut std::io::Cursor::new(sealed), &mut plain)?;
        Ok(plain)
    }

    fn decrypt_into(&self, src: &Path, dst: &Path) -> Result<Digest, SealError> {
        let mut input = std::io::BufReader::new(std::fs::File::open(src)?);
        let mut output = std::io::BufWriter::new(std::fs::File::create(dst)?);
        self.decrypt_stream(&mut input, &mut output)
    }

    fn decrypt_stream(
        &self,
        input: &mut impl Read,
        output: &mut impl Write,
    ) -> Result<Digest, SealError> {
        let mut header = [0u8; MAGIC.len() + NONCE_PREFIX];
        input
            .read_exact(&mut header)
            .map_err(|_| SealError::NotSealed)?;
        if &header[..MAGIC.len()] != MAGIC {
            return Err(SealError::NotSealed);
        }
        let prefix: [u8; NONCE_PREFIX] = header[MAGIC.len()..].try_into().expect("7 bytes");
        let cipher = Aes256Gcm::new(&self.0.into());
        let mut stream = DecryptorBE32::from_aead(cipher, &prefix.into());
        let mut output = Hashed::new(output);
        let mut current = read_exact_or_less(input, CHUNK + TAG)?;
        loop {
            let next = if current.len() == CHUNK + TAG {
                read_exact_or_less(input, CHUNK + TAG)?
            } else {
                vec![]
            };
            if next.is_empty() {
                let plain = stream
                    .decrypt_last(current.as_slice())
                    .map_err(|_| SealError::Tampered)?;
                output.write_all(&plain)?;
                break;
            }
            let plain = stream
                .decrypt_next(current.as_slice())
                .map_err(|_| SealError::Tampered)?;
            output.write_all(&plain)?;
            current = next;
        }
        Ok(output.finish()?)
    }
}

/// A secp256k1 public key given as hex (0x optional), checked to be a point on the curve.
pub fn parse_public_key(text: &str) -> Result<Vec<u8>, SealError> {
    let bytes =
        hex::decode(text.trim().trim_start_matches("0x")).map_err(|_| SealError::BadPublicKey)?;
    alloy::signers::k256::ecdsa::VerifyingKey::from_sec1_bytes(&bytes)
        .map_err(|_| SealError::BadPublicKey)?;
    Ok(bytes)
}

fn read_chunk(input: &mut impl Read) -> std::io::Result<Vec<u8>> {
    read_exact_or_less(input, CHUNK)
}

/// Up to `n` bytes: fewer only at the end of the input.
fn read_exact_or_less(input: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match input.read(&mut buf[filled..])? {
            0 => break,
            k => filled += k,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// A writer that hashes and counts what goes through it.
struct Hashed<W: Write> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Hashed<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            size: 0,
        }
    }
    fn finish(mut self) -> std::io::Result<Digest> {
        self.inner.flush()?;
        Ok(Digest {
            size: self.size,
            sha256: hex::encode(self.hash.finalize()),
        })
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn key_pair() -> ([u8; 32], Vec<u8>) {
        let signer = PrivateKeySigner::random();
        let public = signer
            .credential()
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        (signer.to_bytes().0, public)
    }

    #[test]
    fn files_of_every_size_round_trip_and_only_the_consumer_opens_the_key() {
        let (secret, public) = key_pair();
        let dir = tempfile::tempdir().unwrap();
        let key = ContentKey::random();
        let sealed = key.seal(&public).unwrap();
        let opened = ContentKey::open(&sealed, &secret).unwrap();
        let (other, _) = key_pair();
        assert!(matches!(
            ContentKey::open(&sealed, &other),
            Err(SealError::WrongKey)
        ));
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let (src, enc, dec) = (
                dir.path().join("p"),
                dir.path().join("e"),
                dir.path().join("d"),
            );
            std::fs::write(&src, &plain).unwrap();
            let (p, c) = key.encrypt_file(&src, &enc).unwrap();
            assert_eq!(p.size, size as u64);
            let chunks = size.div_ceil(CHUNK).max(1);
            assert_eq!(c.size as usize, 15 + size + TAG * chunks, "size {size}");
            assert_eq!(crate::proof::digest::file(&enc).unwrap(), c);
            assert_eq!(opened.decrypt_file(&enc, &dec).unwrap(), p);
            assert_eq!(std::fs::read(&dec).unwrap(), plain);
        }
    }

    #[test]
    fn a_file_altered_cut_or_extended_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = ContentKey::random();
        let (src, enc, dec) = (
            dir.path().join("p"),
            dir.path().join("e"),
            dir.path().join("d"),
        );
        std::fs::write(&src, vec![5u8; 2 * CHUNK + 10]).unwrap();
        key.encrypt_file(&src, &enc).unwrap();
        let good = std::fs::read(&enc).unwrap();
        let flipped = {
            let mut b = good.clone();
            b[20] ^= 1;
            b
        };
        // Cut at a chunk boundary: the new last chunk is not flagged last.
        let cut = good[..15 + CHUNK + TAG].to_vec();
        let extended = [good.clone(), good[15..15 + CHUNK + TAG].to_vec()].concat();
        for (what, bytes) in [("flipped", flipped), ("cut", cut), ("extended", extended)] {
            std::fs::write(&enc, bytes).unwrap();
            assert!(
                matches!(key.decrypt_file(&enc, &dec), Err(SealError::Tampered)),
                "{what}"
            );
            assert!(!dec.exists(), "{what}: plaintext left behind");
        }
        std::fs::write(&enc, b"plain text").unwrap();
        assert!(matches!(
            key.decrypt_file(&enc, &dec),
            Err(SealError::NotSealed)
        ));
    }

    #[test]
    fn public_keys_are_checked() {
        let (_, public) = key_pair();
        assert_eq!(parse_public_key(&hex::encode(&public)).unwrap(), public);
        assert!(parse_public_key("0x04abcd").is_err());
        assert!(parse_public_key(&format!("04{}", "00".repeat(64))).is_err());
    }
}
