//! The embedded metadata store: DDOs by DID, served on Aquarius' paths so a single machine
//! needs nothing else. Anyone may publish, as with Aquarius, but only with a DDO whose
//! `proof` is the creator's signature of the DID, and only the creator may replace it.

use std::str::FromStr;

use alloy::primitives::Address;
use serde_json::Value;
use sqlx::{Row, SqlitePool};

use super::{did, AssetError};
use crate::jobs::model::now_epoch;

#[derive(Clone)]
pub struct MetadataStore {
    pool: SqlitePool,
}

impl MetadataStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Stores `ddo` after checking its id and proof. Returns the DID.
    pub async fn publish(&self, ddo: &Value) -> Result<String, AssetError> {
        let id = ddo.get("id").and_then(Value::as_str).ok_or_else(|| AssetError::Invalid("the DDO has no id".into()))?;
        let did_bytes = did::parse(id).ok_or_else(|| AssetError::Invalid(format!("id {id:?} is not a did:op DID")))?;
        let did = did::format(&did_bytes);
        let creator = verify_proof(ddo, &did)?;
        if let Some(existing) = self.creator(&did).await? {
            if existing != creator {
                return Err(AssetError::Invalid(format!("{did} was published by {existing}; only its creator may replace it")));
            }
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

    pub async fn get(&self, did: &str) -> Result<Option<Value>, AssetError> {
        let Some(id) = did::parse(did) else { return Ok(None) };
        let row = sqlx::query("SELECT ddo FROM ddos WHERE did = ?").bind(did::format(&id)).fetch_optional(&self.pool).await?;
        row.map(|r| {
            let text: String = r.try_get("ddo")?;
            serde_json::from_str(&text).map_err(|e| AssetError::Invalid(format!("stored DDO of {did}: {e}")))
        })
        .transpose()
    }

    async fn creator(&self, did: &str) -> Result<Option<Address>, AssetError> {
        let row = sqlx::query("SELECT creator FROM ddos WHERE did = ?").bind(did).fetch_optional(&self.pool).await?;
        Ok(row.and_then(|r| r.try_get::<String, _>("creator").ok()).and_then(|c| Address::from_str(&c).ok()))
    }
}

/// `proof.creator` must have signed the DID (EIP-191) in `proof.signatureValue`.
fn verify_proof(ddo: &Value, did: &str) -> Result<Address, AssetError> {
    let proof = ddo.get("proof").ok_or_else(|| AssetError::Invalid("the DDO has no proof (creator and signatureValue)".into()))?;
    let creator = proof
        .get("creator")
        .and_then(Value::as_str)
        .and_then(|c| Address::from_str(c).ok())
        .ok_or_else(|| AssetError::Invalid("proof.creator is not an address".into()))?;
    let signature = proof.get("signatureValue").and_then(Value::as_str).ok_or_else(|| AssetError::Invalid("proof.signatureValue is missing".into()))?;
    match crate::auth::signature::recover(did, signature) {
        Ok(signer) if signer == creator => Ok(creator),
        _ => Err(AssetError::Invalid(format!("proof.signatureValue is not {creator}'s signature of {did}"))),
    }
}
