//! Assets: DIDs, DDOs, the embedded metadata store, and resolving a DID to its DDO.

pub mod ddo;
pub mod did;
pub mod metadata;
pub mod publish;
pub mod resolver;
pub mod results;
pub mod samples;

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("{0}")]
    Invalid(String),
    /// Understood, but not allowed (who may write a DDO).
    #[error("{0}")]
    Refused(String),
    #[error("{0} is not registered")]
    NotFound(String),
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
    #[error("DDO of {did}: {message}")]
    Fetch { did: String, message: String },
    #[error("metadata store: {0}")]
    Store(#[from] sqlx::Error),
}
