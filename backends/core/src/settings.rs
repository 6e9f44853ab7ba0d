//! What the service hands a backend kind to build one configured backend. The kind's own
//! settings stay opaque to the service: each backend parses its section itself, so the
//! service's config types do not grow a field per kind.

use serde::de::DeserializeOwned;

use crate::BackendError;

#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// The backend's name in `[[backends]]` (scopes what it creates, with the instance).
    pub name: String,
    /// The service instance: two services sharing an engine never touch each other's runs.
    pub instance: String,
    /// The kind's section of the backend's table (`[backends.slurm]` for kind `slurm`), or
    /// an empty table when there is none.
    pub section: serde_json::Value,
    /// Its name, for error messages (`backends.slurm`).
    pub section_name: String,
}

impl BackendSettings {
    /// The section as the backend's settings type, or an error that names the section.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, BackendError> {
        serde_json::from_value(self.section.clone()).map_err(|e| {
            BackendError::invalid_spec(format!(
                "backend {:?}: [{}]: {e}",
                self.name, self.section_name
            ))
        })
    }
}
