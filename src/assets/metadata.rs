//! The embedded metadata store: DDOs by DID, served on Aquarius' paths so a single machine
//! needs nothing else. A DDO's `proof` must be its creator's signature of the DID, and only
//! the creator may replace it. DDOs posted from outside are also authorized by the chain
//! before they reach [`MetadataStore::publish`] ([`may_write`], called by the v1 API).

use std::str::FromStr;

use alloy::primitives::{Address, B256, Signature, keccak256};
use serde_json::Value;
use sqlx::{Row, SqlitePool};

use super::{AssetError, did};
use crate::jobs::model::now_epoch;

#[derive(Clone)]
pub struct MetadataStore {
    pool: SqlitePool,
}

impl MetadataStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Stores `ddo` after checking its id and proof. Returns the DID. Whether its creator may
    /// write it is the caller's to check first ([`may_write`]); the service's own results
    /// assets come straight here.
    pub async fn publish(&self, ddo: &Value) -> Result<String, AssetError> {
        let (id, creator) = verify_proof(ddo)?;
        let did = did::format(&id);
        if let Some(existing) = self.creator(&did).await?
            && existing != creator
        {
            return Err(AssetError::Refused(format!(
                "{did} was published by {existing}; only its creator may replace it"
            )));
        }
        let now = now_epoch();
        sqlx::query(
            "INSERT INTO ddos (did, ddo, creator, created, updated) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(did) DO UPDATE SET ddo = excluded.ddo, updated = excluded.updated",
        )
        .bind(&did)
        .bind(ddo.to_string())
        .bind(creator.to_string())
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(did)
    }

    /// Every DDO in the store, newest first (at most `limit`).
    pub async fn list(&self, limit: i64) -> Result<Vec<Value>, AssetError> {
        let rows = sqlx::query("SELECT ddo FROM ddos ORDER BY updated DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| sqlx::Row::try_get::<String, _>(r, "ddo").ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect())
    }

    pub async fn get(&self, did: &str) -> Result<Option<Value>, AssetError> {
        let Some(id) = did::parse(did) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT ddo FROM ddos WHERE did = ?")
            .bind(did::format(&id))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let text: String = r.try_get("ddo")?;
            serde_json::from_str(&text)
                .map_err(|e| AssetError::Invalid(format!("stored DDO of {did}: {e}")))
        })
        .transpose()
    }

    async fn creator(&self, did: &str) -> Result<Option<Address>, AssetError> {
        let row = sqlx::query("SELECT creator FROM ddos WHERE did = ?")
            .bind(did)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>("creator").ok())
            .and_then(|c| Address::from_str(&c).ok()))
    }
}

/// `proof.creator` must have signed the DID in `proof.signatureValue`, in one of the two forms
/// real clients write (see [`squid_py_proof_hash`]). Returns the DID's id and the creator.
/// This proves who wrote the DDO, not that they may: [`may_write`] asks the chain.
pub fn verify_proof(ddo: &Value) -> Result<(B256, Address), AssetError> {
    let id_text = ddo
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| AssetError::Invalid("the DDO has no id".into()))?;
    let id = did::parse(id_text)
        .ok_or_else(|| AssetError::Invalid(format!("id {id_text:?} is not a did:op DID")))?;
    let did = did::format(&id);
    let proof = ddo.get("proof").ok_or_else(|| {
        AssetError::Invalid("the DDO has no proof (creator and signatureValue)".into())
    })?;
    // squid-py writes `account.address` as the account was made: checksummed or not.
    let creator = proof
        .get("creator")
        .and_then(Value::as_str)
        .and_then(|c| Address::from_str(c.trim()).ok())
        .ok_or_else(|| AssetError::Invalid("proof.creator is not an address".into()))?;
    let signature = proof
        .get("signatureValue")
        .and_then(Value::as_str)
        .ok_or_else(|| AssetError::Invalid("proof.signatureValue is missing".into()))?;
    let signature = Signature::from_str(signature.trim())
        .map_err(|_| AssetError::Invalid("proof.signatureValue is not 65 bytes of hex".into()))?;
    // This service's CLI (and its results assets): EIP-191 personal_sign of the DID text.
    let cli = signature.recover_address_from_msg(did.as_bytes()).ok();
    // squid-py 0.9.3's `OceanAssets.create`.
    let squid_py = signature
        .recover_address_from_prehash(&squid_py_proof_hash(&id))
        .ok();
    if cli == Some(creator) || squid_py == Some(creator) {
        Ok((id, creator))
    } else {
        Err(AssetError::Invalid(format!(
            "proof.signatureValue is not {creator}'s signature of {did} (EIP-191 of the DID, or squid-py's signature of its id)"
        )))
    }
}

/// The hash squid-py 0.9.3 signs as a DDO's proof:
/// `keeper.sign_hash(add_ethereum_prefix_and_hash_msg(did_to_id_bytes(did)))`, where
/// `add_ethereum_prefix_and_hash_msg(text)` is
/// `Web3.sha3(text=f"\x19Ethereum Signed Message:\n{len(text)}{text}")` (ocean-keeper 0.3.5,
/// `ocean_keeper/utils.py`). Given the id *bytes*, the f-string puts their length (32) and
/// their Python repr (`b'...'`, not the bytes themselves) into the message, and `sign_hash`
/// signs that keccak256 as it is (`Account.signHash`, no second prefix). So the message is
/// `"\x19Ethereum Signed Message:\n32" + repr(id_bytes)`, whatever length that repr has.
pub fn squid_py_proof_hash(id: &B256) -> B256 {
    keccak256(format!(
        "\x19Ethereum Signed Message:\n32{}",
        python_bytes_repr(id.as_slice())
    ))
}

/// `repr(bytes)` as CPython writes it (`PyBytes_Repr`): single quotes unless the bytes hold a
/// `'` and no `"`; `\\`, the quote, `\t`, `\n`, `\r` escaped; other bytes outside printable
/// ASCII as `\xhh` (lower-case hex).
fn python_bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::from("b");
    out.push(quote as char);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b if b == quote => {
                out.push('\\');
                out.push(b as char);
            }
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote as char);
    out
}

/// What the chain says about a DID, for deciding who may write its DDO.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    pub owner: Address,
    /// Who registered the DID's current URL (`_lastUpdatedBy`).
    pub registrant: Address,
}

/// Who may write a DID's DDO: the chain decides, not the signature alone (anyone can sign a
/// DDO for a DID they made up, or for someone else's). The DID must be registered in
/// DIDRegistry (squid-py and `brizo asset publish` both register first, then post the DDO),
/// and `creator` must be its owner on chain, or a publisher this service serves that
/// registered the DID's current URL itself: squid-py's `create(owner_address=...)` hands the
/// DID over between registering and posting, and a served publisher may do the same.
pub fn may_write(
    did: &str,
    creator: Address,
    registration: Option<Registration>,
    publishers: &[Address],
) -> Result<(), AssetError> {
    let Some(r) = registration else {
        return Err(AssetError::Refused(format!(
            "{did} is not registered in DIDRegistry; register it on chain first, then post its DDO"
        )));
    };
    if r.owner == creator || (r.registrant == creator && publishers.contains(&creator)) {
        return Ok(());
    }
    Err(AssetError::Refused(format!(
        "{did} is owned on chain by {}, not by proof.creator {creator}",
        r.owner
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use serde_json::json;

    // Computed with squid-py's rule in Python (pip install eth-account), so anyone can recompute:
    //   from eth_account import Account
    //   from eth_utils import keccak
    //   key = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    //   did = "did:op:0c27d2b3f60a5c0d9d2b7e0a1e4f7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6"
    //   id_bytes = bytes.fromhex(did[len("did:op:"):])
    //   text = f"\x19Ethereum Signed Message:\n{len(id_bytes)}{id_bytes}"  # {id_bytes}: repr, b"..."
    //   sig = Account.unsafe_sign_hash(keccak(text.encode()), key)  # web3 4.5's signHash
    //   print(Account.from_key(key).address, "0x" + sig.signature.hex())
    // This id has a `'` and no `"` among its bytes (so the repr is in double quotes), and
    // `\n`, `\\`, `\r`, printable and non-ASCII bytes.
    const KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
    const DID: &str = "did:op:0c27d2b3f60a5c0d9d2b7e0a1e4f7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6";
    const SQUID_PY_SIGNATURE: &str = "0x43d4ae0d682a52cf50128eea8c742cbb3199a3ea0185c81878e4f44018bc50800e31f20924abeebfa7519a860bc115925ddd8425a5eb452d4f3672b8d94684851c";

    /// A DDO with the fields squid-py 0.9.3 writes into `proof` (ocean-utils' `DDO.add_proof`).
    fn ddo(did: &str, creator: &str, signature: &str) -> Value {
        json!({"id": did, "proof": {"type": "DDOIntegritySignature", "created": "2020-06-01T10:00:00Z",
               "creator": creator, "signatureValue": signature, "checksum": {"0": "0x00"}}})
    }

    #[test]
    fn bytes_are_written_as_python_writes_their_repr() {
        // print(repr(bytes.fromhex(h))) for each h
        let cases = [
            (
                "0c27d2b3f60a5c0d9d2b7e0a1e4f7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6",
                r#"b"\x0c'\xd2\xb3\xf6\n\\\r\x9d+~\n\x1eO{\x8c\x9d\x0e\x1f*;L]n\x7f\x80\x91\xa2\xb3\xc4\xd5\xe6""#,
            ),
            (
                "5c0a0d09227f80ff000102030405060708090a0b0c0d0e0f1011121314151617",
                r#"b'\\\n\r\t"\x7f\x80\xff\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17'"#,
            ),
            (
                "2722414141414141414141414141414141414141414141414141414141414141",
                r#"b'\'"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'"#,
            ),
        ];
        for (hex_id, repr) in cases {
            assert_eq!(
                python_bytes_repr(&hex::decode(hex_id).unwrap()),
                repr,
                "{hex_id}"
            );
        }
    }

    #[test]
    fn squid_py_proofs_are_accepted() {
        let id = did::parse(DID).unwrap();
        assert_eq!(
            verify_proof(&ddo(DID, ADDRESS, SQUID_PY_SIGNATURE)).unwrap(),
            (id, ADDRESS.parse().unwrap())
        );
        // The creator as squid-py may write it: not checksummed.
        assert!(verify_proof(&ddo(DID, &ADDRESS.to_lowercase(), SQUID_PY_SIGNATURE)).is_ok());
    }

    #[test]
    fn cli_proofs_are_accepted() {
        let signer: PrivateKeySigner = KEY.parse().unwrap();
        let signature = signer
            .sign_message_sync(DID.as_bytes())
            .unwrap()
            .to_string();
        assert_eq!(
            verify_proof(&ddo(DID, ADDRESS, &signature)).unwrap().1,
            signer.address()
        );
    }

    #[test]
    fn proofs_by_anyone_else_or_of_another_did_are_refused() {
        let other = PrivateKeySigner::random();
        // Someone else claiming to have created it, with the creator's signature...
        let err = verify_proof(&ddo(DID, &other.address().to_string(), SQUID_PY_SIGNATURE))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not") && err.contains(&other.address().to_string()),
            "{err}"
        );
        // ... or signing it, in either form, in the creator's name.
        let forged = other.sign_message_sync(DID.as_bytes()).unwrap().to_string();
        assert!(verify_proof(&ddo(DID, ADDRESS, &forged)).is_err());
        let forged = other
            .sign_hash_sync(&squid_py_proof_hash(&did::parse(DID).unwrap()))
            .unwrap()
            .to_string();
        assert!(verify_proof(&ddo(DID, ADDRESS, &forged)).is_err());
        // The creator's signature of another DID.
        let another = format!("did:op:{}", "ab".repeat(32));
        assert!(verify_proof(&ddo(&another, ADDRESS, SQUID_PY_SIGNATURE)).is_err());
        assert!(verify_proof(&ddo(DID, ADDRESS, "0x1234")).is_err());
        assert!(verify_proof(&json!({"id": DID})).is_err());
    }

    #[test]
    fn the_chain_decides_who_may_write_a_ddo() {
        let [owner, registrant, publisher, stranger] = [1u8, 2, 3, 4].map(Address::repeat_byte);
        let registered = |owner, registrant| Some(Registration { owner, registrant });
        assert!(may_write(DID, owner, registered(owner, owner), &[]).is_ok());
        // Ownership handed over after registering (squid-py's owner_address): the new owner may.
        assert!(may_write(DID, owner, registered(owner, registrant), &[]).is_ok());
        // So may the registrant, if it is a publisher this service serves; nobody else.
        assert!(may_write(DID, publisher, registered(owner, publisher), &[publisher]).is_ok());
        assert!(may_write(DID, registrant, registered(owner, registrant), &[publisher]).is_err());
        assert!(may_write(DID, publisher, registered(owner, registrant), &[publisher]).is_err());
        let err = may_write(DID, stranger, registered(owner, owner), &[publisher])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&owner.to_string()) && err.contains(&stranger.to_string()),
            "{err}"
        );
        let err = may_write(DID, owner, None, &[owner])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not registered"), "{err}");
    }
}
