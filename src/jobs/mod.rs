//! Jobs: the model, the durable store, the workspace layout, and the engine that drives them.

pub mod disk;
pub mod engine;
pub mod model;
pub mod routing;
pub mod schema;
pub mod store;
pub mod workspace;

pub use engine::{Engine, EngineError};
pub use model::{Job, JobRequest, Outcome, OutputFile, Phase};
