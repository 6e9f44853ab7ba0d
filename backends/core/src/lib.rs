//! The contract between the brizo job engine and the places jobs run.
//!
//! A backend receives a [`JobSpec`] (an image, a command, mounts, limits) and runs it in
//! isolation. The engine owns everything around it: staging inputs, deadlines, outputs,
//! settlement. Keeping the trait small is what lets cloud batch services, Slurm or Kubernetes
//! implement it without the engine changing; [`conformance`] is the suite each one must pass.

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod settings;
mod spec;

pub use backend::{Capabilities, Collected, ComputeBackend, ExitInfo, RunInfo, RunState};
pub use error::{BackendError, BoxError, ErrorClass};
pub use settings::BackendSettings;
pub use spec::{FetchedFile, JobSpec, Limits, Mount, RemoteFile};
