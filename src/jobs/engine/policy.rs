//! The error policy: what a failed step means for its job, from the error's class alone.

use brizo_backend_core::{BackendError, ErrorClass};

use crate::jobs::model::Phase;
use crate::jobs::store::StoreError;

/// Why a drive step stopped short.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// Something outside us is down (backend, results store, disk full); the job stays where
    /// it is and the loop retries it later.
    #[error("{0}")]
    Retry(String),
    /// The backend failed; what happens next is [`policy`]'s to say, from the error's class.
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the drive loop does after a step failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Try the step again after the backoff.
    Retry,
    /// End the job now as failed, with the error as its reason, in this phase.
    Fail(Phase),
}

/// Attempts an unclassified backend error gets before the job fails with it.
const MAX_UNKNOWN_ATTEMPTS: u32 = 6;

/// The engine's error policy: the backend error's class alone decides. A permanent error is
/// never retried; an unknown one a bounded number of times; a transient one (the engine is
/// away) until it answers again.
pub(super) fn policy(e: &BackendError, attempts: u32) -> Action {
    match e.class() {
        ErrorClass::Transient => Action::Retry,
        ErrorClass::Unknown if attempts < MAX_UNKNOWN_ATTEMPTS => Action::Retry,
        ErrorClass::BadJob => Action::Fail(Phase::AlgorithmProvisioningFailed),
        ErrorClass::BadInput => Action::Fail(Phase::DataProvisioningFailed),
        _ => Action::Fail(Phase::Finished),
    }
}
