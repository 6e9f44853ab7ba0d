//! Layered configuration: embedded `config/default.toml` < `--config FILE` < `BRIZO_*`
//! environment (`__` separates nested keys) < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized};
use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("../config/default.toml");

/// TOML as figment reads it, parsed by toml 1: figment's own `toml` feature is toml 0.8, whose
/// parser (winnow 0.7) would be a second winnow in the build beside alloy's.
pub struct Toml;

impl Format for Toml {
    type Error = toml::de::Error;
    const NAME: &'static str = "TOML";

    fn from_str<T: serde::de::DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        toml::from_str(string)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: String,
    /// Name of the default backend (jobs whose data no backend is next to).
    pub backend: String,
    pub backends: Vec<BackendConfig>,
    pub instance: String,
    pub max_running_jobs: usize,
    pub max_staging_jobs: usize,
    pub reconcile_interval_ms: u64,
    /// How often the store and the backends are checked for `/health` (answered from the last
    /// check, never from a request's own round trip to them).
    pub health_interval_ms: u64,
    /// First delay before a failed step is tried again; it doubles per attempt, to 64 times.
    pub retry_backoff_ms: u64,
    pub docker: DockerConfig,
    pub limits: LimitsConfig,
    pub inputs: InputsConfig,
    pub outputs: OutputsConfig,
    pub images: ImagesConfig,
    pub chain: ChainConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChainConfig {
    pub keeper_url: String,
    pub artifacts_dir: PathBuf,
    /// Contract name → address, instead of an artifacts folder.
    #[serde(default)]
    pub contracts: std::collections::BTreeMap<String, String>,
    pub network: String,
    pub keystore_file: PathBuf,
    pub publishers: Vec<String>,
    pub public_url: String,
    pub ddo_timeout_secs: u64,
    pub ddo_max_kb: u64,
    pub ddo_cache_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BackendConfig {
    pub name: String,
    /// One of [`crate::backends::KINDS`]: `docker`, `aws-batch`, `slurm`.
    pub kind: String,
    /// Data locations (URL prefixes) this backend sits next to.
    #[serde(default)]
    pub near: Vec<String>,
    /// The kind's own settings (`[backends.aws]`, `[backends.slurm]`, ...), read by the
    /// backend itself so that this type does not grow a field per kind.
    #[serde(flatten)]
    pub sections: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DockerConfig {
    pub socket: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LimitsConfig {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: i64,
    pub tmpfs_mb: u64,
    pub user: String,
    pub default_timeout_secs: u64,
    pub max_timeout_secs: u64,
    /// A job must start its run within this long of its submission.
    pub max_wait_secs: u64,
    /// How long past its timeout (or its stop request) a job may take to end.
    pub grace_secs: u64,
    /// How what a job writes is bounded while it runs.
    #[serde(default)]
    pub disk: crate::jobs::disk::DiskMode,
    pub allow_network: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InputsConfig {
    pub dataset_roots: Vec<PathBuf>,
    pub max_input_mb: u64,
    pub max_algorithm_kb: u64,
    /// Largest file of a dataset's public sample the publisher may upload.
    #[serde(default = "default_max_sample_kb")]
    pub max_sample_kb: u64,
    pub allow_private_addresses: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OutputsConfig {
    pub max_output_mb: u64,
    pub max_log_kb: u64,
    pub results_url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ImagesConfig {
    pub allowed: Vec<String>,
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainOverrides>,
}

#[derive(Debug, Default, Serialize)]
pub struct ChainOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keeper_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts_dir: Option<PathBuf>,
}

fn default_max_sample_kb() -> u64 {
    10 * 1024
}

impl Config {
    // figment's own error, large but returned once, at start-up.
    #[allow(clippy::result_large_err)]
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, figment::Error> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            if !file.exists() {
                return Err(figment::Error::from(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let mut config: Config = figment
            .merge(Env::prefixed("BRIZO_").split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()?;
        config.fill_derived_defaults();
        Ok(config)
    }

    /// Defaults that depend on other values (the data dir), filled once after loading.
    fn fill_derived_defaults(&mut self) {
        if self.data_dir.is_relative()
            && let Ok(cwd) = std::env::current_dir()
        {
            self.data_dir = cwd.join(&self.data_dir);
        }
        if self.inputs.dataset_roots.is_empty() {
            self.inputs.dataset_roots = vec![self.data_dir.join("datasets")];
        }
        if self.outputs.results_url.is_empty() {
            self.outputs.results_url =
                format!("file://{}", self.data_dir.join("results").display());
        }
        if self.chain.public_url.is_empty() {
            self.chain.public_url = format!("http://{}", self.bind);
        }
        // `[docker] socket` is the default of every docker backend without one of its own.
        if !self.docker.socket.is_empty() {
            for b in self.backends.iter_mut().filter(|b| b.kind == "docker") {
                let section = b
                    .sections
                    .entry("docker".into())
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(table) = section
                    .as_object_mut()
                    .filter(|t| !t.contains_key("socket"))
                {
                    table.insert("socket".into(), self.docker.socket.clone().into());
                }
            }
        }
        if self.instance.is_empty() {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(self.data_dir.to_string_lossy().as_bytes());
            self.instance = hex::encode(&digest[..6]);
        }
    }

    /// Problems that make serving pointless, each with what to do about it.
    pub fn validate_for_serving(&self) -> Result<(), String> {
        if self.admin_token.len() < 16 {
            return Err("no operator token: set BRIZO_ADMIN_TOKEN (16 characters or more) or admin_token in the config file".into());
        }
        if self.max_running_jobs == 0 || self.max_staging_jobs == 0 {
            return Err("max_running_jobs and max_staging_jobs must be at least 1".into());
        }
        if self.backends.is_empty() {
            return Err("no compute backend configured ([[backends]])".into());
        }
        let mut names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("two backends share a name in [[backends]]".into());
        }
        if !names.contains(&self.backend.as_str()) {
            return Err(format!(
                "the default backend {:?} is not one of [[backends]] ({})",
                self.backend,
                names.join(", ")
            ));
        }
        if self.limits.disk == crate::jobs::disk::DiskMode::Quota
            && let Err(why) = crate::jobs::disk::can_quota()
        {
            return Err(format!(
                "limits.disk = \"quota\" needs a filesystem per job, but {why}; run as root on a host with loop devices, or set limits.disk = \"auto\""
            ));
        }
        if self.limits.default_timeout_secs > self.limits.max_timeout_secs {
            return Err(
                "limits.default_timeout_secs is larger than limits.max_timeout_secs".into(),
            );
        }
        Ok(())
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.data_dir.join("jobs")
    }
    /// How many jobs may be staged, or staging, before a run slot is theirs: a run slot's
    /// worth waiting staged (the next runs start at once) and a staging slot's worth on their
    /// way. More would hold disks and inputs on the host for nothing.
    pub fn max_staged_ahead(&self) -> usize {
        self.max_running_jobs + self.max_staging_jobs
    }

    /// Blank job disks, one per size (jobs::disk).
    pub fn blank_disks_dir(&self) -> PathBuf {
        self.data_dir.join("disks")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("brizo.sqlite")
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "brizo.toml",
                "max_running_jobs = 7\n[limits]\nmemory_mb = 100\npids = 9",
            )?;
            jail.set_env("BRIZO_LIMITS__MEMORY_MB", "200");
            jail.set_env("BRIZO_ADMIN_TOKEN", "from-the-environment");
            let overrides = Overrides {
                bind: Some("127.0.0.1:9999".parse().unwrap()),
                data_dir: Some("/srv/brizo".into()),
                chain: None,
            };
            let c = Config::load(Some(Path::new("brizo.toml")), overrides).unwrap();
            assert_eq!(c.max_running_jobs, 7, "file beats defaults");
            assert_eq!(c.limits.pids, 9);
            assert_eq!(c.limits.memory_mb, 200, "environment beats file");
            assert_eq!(c.admin_token, "from-the-environment");
            assert_eq!(c.bind.port(), 9999, "flags beat everything");
            assert_eq!(
                c.inputs.dataset_roots,
                vec![PathBuf::from("/srv/brizo/datasets")]
            );
            assert_eq!(c.outputs.results_url, "file:///srv/brizo/results");
            assert_eq!(c.instance.len(), 12);
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = Config::load(
            Some(Path::new("/nonexistent/brizo.toml")),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn a_malformed_file_names_the_file_and_the_line() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("brizo.toml", "max_running_jobs = 2\n[limits\npids = 9\n")?;
            let err = Config::load(Some(Path::new("brizo.toml")), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("brizo.toml"), "{err}");
            assert!(err.contains("line 2"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn every_example_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let c = Config::load(Some(&path), Overrides::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(c.backends.len() > 1, "{} adds a backend", path.display());
            loaded += 1;
        }
        assert!(loaded >= 4, "the examples are in {}", dir.display());
    }

    #[test]
    fn serving_needs_a_token() {
        // Inside a Jail: it serializes with the other env-setting test and restores the env.
        figment::Jail::expect_with(|jail| {
            jail.set_env("BRIZO_ADMIN_TOKEN", "");
            let c = Config::load(None, Overrides::default()).unwrap();
            assert!(
                c.validate_for_serving()
                    .unwrap_err()
                    .contains("BRIZO_ADMIN_TOKEN")
            );
            jail.set_env("BRIZO_ADMIN_TOKEN", "long-enough-operator-token");
            assert!(
                Config::load(None, Overrides::default())
                    .unwrap()
                    .validate_for_serving()
                    .is_ok()
            );
            Ok(())
        });
    }
}
