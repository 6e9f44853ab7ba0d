//! The backend kinds this service knows, in one table: a new kind is one crate and one line
//! here. Each kind's settings are its own section of its `[[backends]]` table
//! (`[backends.slurm]`), parsed by the backend itself. A kind compiled out of this build is
//! still known, so that config naming it is refused with the cargo feature that brings it.

use std::sync::Arc;

use brizo_backend_core::{BackendSettings, ComputeBackend};

use crate::config::{BackendConfig, Config};

/// One kind: its name in config, the cargo feature that builds it, its settings section.
pub struct Kind {
    pub name: &'static str,
    pub feature: &'static str,
    pub section: &'static str,
    /// Whether this build includes it.
    pub built: bool,
}

macro_rules! kinds {
    ($($name:literal => feature $feature:literal, section $section:literal, $krate:ident;)*) => {
        pub const KINDS: &[Kind] = &[$(Kind { name: $name, feature: $feature, section: $section, built: cfg!(feature = $feature) }),*];

        async fn build_kind(kind: &str, settings: &BackendSettings) -> Option<Result<Arc<dyn ComputeBackend>, brizo_backend_core::BackendError>> {
            match kind {
                $(
                    #[cfg(feature = $feature)]
                    $name => Some($krate::from_settings(settings).await),
                )*
                _ => None,
            }
        }
    };
}

kinds! {
    "docker"    => feature "docker", section "docker", brizo_backend_docker;
    "aws-batch" => feature "aws",    section "aws",    brizo_backend_aws;
    "slurm"     => feature "slurm",  section "slurm",  brizo_backend_slurm;
    "azure-batch" => feature "azure", section "azure",  brizo_backend_azure;
    "gcp-batch" => feature "gcp",    section "gcp",    brizo_backend_gcp;
}

pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// Builds one configured backend, or says why not: an unknown kind, a kind this build does not
/// include (with its feature), settings outside the kind's section, or the backend's own
/// refusal of its settings.
pub async fn build(config: &Config, b: &BackendConfig) -> anyhow::Result<Arc<dyn ComputeBackend>> {
    let Some(kind) = kind(&b.kind) else {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        anyhow::bail!(
            "backend {:?} has unknown kind {:?}; kinds are {}",
            b.name,
            b.kind,
            names.join(", ")
        );
    };
    if !kind.built {
        anyhow::bail!(
            "backend {:?} is of kind {}, which this build does not include: build with `--features {}`",
            b.name,
            kind.name,
            kind.feature
        );
    }
    if let Some(stray) = b.sections.keys().find(|k| k.as_str() != kind.section) {
        anyhow::bail!(
            "backend {:?} (kind {}) has a setting {stray:?} it does not read; its settings go in [backends.{}]",
            b.name,
            kind.name,
            kind.section
        );
    }
    let settings = BackendSettings {
        name: b.name.clone(),
        instance: config.instance.clone(),
        section: b
            .sections
            .get(kind.section)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({})),
        section_name: format!("backends.{}", kind.section),
    };
    let built = build_kind(kind.name, &settings)
        .await
        .expect("a built kind has a constructor");
    built.map_err(|e| anyhow::anyhow!("{e}"))
}
