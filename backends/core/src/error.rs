//! Why a backend call failed. The variant is the class the engine's error policy acts on
//! (retry, fail the job with a reason, give up after a few attempts); the message is the
//! reason a consumer reads; the source keeps the underlying error for the operator's logs.

/// Any error a backend wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The engine behind the backend does not answer (daemon down, network). Retrying later helps.
    #[error("compute backend unavailable: {message}{}", suffix(source))]
    Unavailable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The image is not present where the job would run. Retrying does not help until it is.
    #[error("image {image} is not available to the backend; build or load it there first")]
    ImageNotFound { image: String },
    /// The spec cannot run as given (bad mount, bad limit, bad image reference). Retrying does
    /// not help.
    #[error("invalid job spec: {message}{}", suffix(source))]
    InvalidSpec {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// An input the run was to fetch itself cannot be had (missing, too large, no permission).
    /// Retrying does not help.
    #[error("{message}{}", suffix(source))]
    Input {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The run ended without a usable result: it never started (its preparation failed), or
    /// what it returned cannot be read. Retrying does not help.
    #[error("{message}{}", suffix(source))]
    RunFailed {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// No run exists for this job id.
    #[error("no run for job {job_id}")]
    NotFound { job_id: String },
    /// Anything else the engine answered. It may pass, so it is retried, but only a few times.
    #[error("compute backend error: {message}{}", suffix(source))]
    Other {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

fn suffix(source: &Option<BoxError>) -> String {
    source
        .as_ref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

/// What the engine does about an error, decided by its class alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later, with backoff, for as long as the job's deadline allows.
    Transient,
    /// Try again a bounded number of times, then fail the job with the last reason.
    Unknown,
    /// The job cannot run as submitted: fail it now (an image, a spec).
    BadJob,
    /// One of the job's inputs cannot be had: fail it now.
    BadInput,
    /// The run is over without a usable result: fail it now.
    RunFailed,
    /// The run is not there (never made, or removed).
    Missing,
}

impl BackendError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        BackendError::Unavailable {
            message: message.into(),
            source: None,
        }
    }
    pub fn invalid_spec(message: impl Into<String>) -> Self {
        BackendError::InvalidSpec {
            message: message.into(),
            source: None,
        }
    }
    pub fn input(message: impl Into<String>) -> Self {
        BackendError::Input {
            message: message.into(),
            source: None,
        }
    }
    pub fn run_failed(message: impl Into<String>) -> Self {
        BackendError::RunFailed {
            message: message.into(),
            source: None,
        }
    }
    pub fn other(message: impl Into<String>) -> Self {
        BackendError::Other {
            message: message.into(),
            source: None,
        }
    }
    pub fn image_not_found(image: impl Into<String>) -> Self {
        BackendError::ImageNotFound {
            image: image.into(),
        }
    }
    pub fn not_found(job_id: impl Into<String>) -> Self {
        BackendError::NotFound {
            job_id: job_id.into(),
        }
    }

    /// Keeps `cause` as this error's source (shown after the message).
    pub fn because(mut self, cause: impl Into<BoxError>) -> Self {
        match &mut self {
            BackendError::Unavailable { source, .. }
            | BackendError::InvalidSpec { source, .. }
            | BackendError::Input { source, .. }
            | BackendError::RunFailed { source, .. }
            | BackendError::Other { source, .. } => *source = Some(cause.into()),
            BackendError::ImageNotFound { .. } | BackendError::NotFound { .. } => {}
        }
        self
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            BackendError::Unavailable { .. } => ErrorClass::Transient,
            BackendError::ImageNotFound { .. } | BackendError::InvalidSpec { .. } => {
                ErrorClass::BadJob
            }
            BackendError::Input { .. } => ErrorClass::BadInput,
            BackendError::RunFailed { .. } => ErrorClass::RunFailed,
            BackendError::NotFound { .. } => ErrorClass::Missing,
            BackendError::Other { .. } => ErrorClass::Unknown,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.class(), ErrorClass::Transient | ErrorClass::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_kept_and_shown_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = BackendError::unavailable("slurmrestd at 127.0.0.1:6820").because(io);
        assert_eq!(
            e.to_string(),
            "compute backend unavailable: slurmrestd at 127.0.0.1:6820: refused"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.class(), ErrorClass::Transient);
        assert!(!BackendError::input("gone").is_retryable());
        assert_eq!(
            BackendError::image_not_found("x").class(),
            ErrorClass::BadJob
        );
    }
}
