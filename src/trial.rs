//! Try before buying: a data scientist runs their algorithm on a dataset's public sample, on
//! their own machine, in the same image, layout (`/data/inputs/<did>/<n>`, `/data/outputs`,
//! `$ALGO`) and isolation (no network, non-root, read-only root, limits) as the real job, and
//! sees its log and outputs before paying. The sample is what the publisher uploaded and its
//! DDO declares by sha256; nothing of the real data is involved.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use brizo_backend_core::ComputeBackend;
use futures::StreamExt;
use sha2::Digest as _;

use crate::assets::{ddo, did};
use crate::config::{Config, Overrides};
use crate::jobs::model::{AlgorithmSource, InputSource, JobRequest, OutputFile, new_job_id};
use crate::jobs::workspace::{self, Workspace, place_inputs};

/// What the trial run gave.
pub struct Trial {
    pub image: String,
    pub exit_code: i64,
    pub outputs: Vec<OutputFile>,
}

pub struct TrialArgs<'a> {
    pub server: &'a str,
    pub dataset: &'a str,
    pub algorithm: &'a Path,
    /// `image:tag`; default: the dataset's first supported container.
    pub container: Option<&'a str>,
    pub entrypoint: &'a str,
    /// Where to copy the outputs.
    pub keep: Option<&'a Path>,
}

/// Runs the trial; the log goes to `on_log` as it comes.
pub async fn run(args: TrialArgs<'_>, mut on_log: impl FnMut(&str)) -> anyhow::Result<Trial> {
    let id = did::parse(args.dataset)
        .with_context(|| format!("{} is not a did:op DID", args.dataset))?;
    let did_text = did::format(&id);
    let server = args.server.trim_end_matches('/');
    let http = reqwest::Client::new();
    let ddo_doc: serde_json::Value = http
        .get(format!("{server}/api/v1/aquarius/assets/ddo/{did_text}"))
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("{did_text}: no DDO on {server}"))?
        .json()
        .await?;
    let sample = ddo::sample_files(&ddo_doc);
    if sample.is_empty() {
        bail!("{did_text} publishes no sample to try an algorithm on; ask its publisher for one");
    }
    let policy = ddo::compute_policy(&ddo_doc)?;
    let image = match (args.container, policy.supported_containers.first()) {
        (Some(c), _) => c.to_string(),
        (None, Some(c)) => c.clone(),
        (None, None) => bail!("the dataset names no container: give --container image:tag"),
    };
    if !policy.supported_containers.is_empty() && !policy.supported_containers.contains(&image) {
        bail!(
            "image {image} is not one the dataset supports ({}); the real job would be refused",
            policy.supported_containers.join(", ")
        );
    }
    let code = std::fs::read(args.algorithm)
        .with_context(|| format!("reading {}", args.algorithm.display()))?;

    // A service of one's own, in a scratch folder: the defaults are the publisher's defaults.
    let scratch = std::env::temp_dir().join(format!("brizo-try-{}", new_job_id()));
    let config = Config::load(
        None,
        Overrides {
            data_dir: Some(scratch.clone()),
            ..Default::default()
        },
    )?;
    let sample = Sample {
        http: &http,
        server,
        did_text: &did_text,
        id: &id,
        files: &sample,
    };
    let result = run_in(&config, &sample, &image, &code, &args, &mut on_log).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The dataset's sample, as the service serves it.
struct Sample<'a> {
    http: &'a reqwest::Client,
    server: &'a str,
    did_text: &'a str,
    id: &'a alloy::primitives::B256,
    files: &'a [ddo::SampleFile],
}

impl Sample<'_> {
    /// One sample file, checked against the size and sha256 the DDO declares.
    async fn fetch(&self, file: &ddo::SampleFile) -> anyhow::Result<bytes::Bytes> {
        let bytes = self
            .http
            .get(format!(
                "{}/api/v1/brizo/samples/{}/{}",
                self.server, self.did_text, file.name
            ))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("sample file {} is not on the service", file.name))?
            .bytes()
            .await?;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        if sha != file.sha256 || bytes.len() as u64 != file.size {
            bail!(
                "sample file {} does not match the sha256 its DDO declares ({sha}, not {}); not running on it",
                file.name,
                file.sha256
            );
        }
        Ok(bytes)
    }
}

async fn run_in(
    config: &Config,
    sample: &Sample<'_>,
    image: &str,
    code: &[u8],
    args: &TrialArgs<'_>,
    on_log: &mut impl FnMut(&str),
) -> anyhow::Result<Trial> {
    let job_id = new_job_id();
    let name = hex::encode(sample.id);
    let request = JobRequest {
        image: image.to_string(),
        entrypoint: args.entrypoint.to_string(),
        algorithm: AlgorithmSource {
            rawcode: Some(String::from_utf8_lossy(code).into_owned()),
            url: None,
            did: None,
        },
        inputs: sample
            .files
            .iter()
            .map(|s| InputSource {
                url: format!("sample:{}", s.name),
                name: Some(name.clone()),
            })
            .collect(),
        timeout_seconds: None,
        network: false,
        encrypt_to: None,
    };
    let ws = Workspace::new(&config.jobs_dir(), &job_id);
    ws.create(&config.limits.user, None).await?;
    let outcome = async {
        std::fs::write(ws.algorithm(), code)?;
        set_mode(&ws.algorithm(), 0o644)?;
        for (placed, file) in place_inputs(&request.inputs).into_iter().zip(sample.files) {
            let bytes = sample.fetch(file).await?;
            let dir = ws.inputs().join(&placed.name);
            std::fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o755)?;
            let dest = dir.join(placed.index.to_string());
            std::fs::write(&dest, &bytes)?;
            set_mode(&dest, 0o644)?;
        }
        let spec = workspace::build_spec(
            config,
            &job_id,
            &request,
            config.limits.default_timeout_secs,
            &ws,
            &[],
        )
        .map_err(anyhow::Error::msg)?;
        let backend: Arc<dyn ComputeBackend> =
            crate::backends::build(config, &config.backends[0]).await?;
        let ran = run_spec(backend.as_ref(), &spec, config, on_log).await;
        let _ = backend.remove(&job_id).await;
        let exit_code = ran?;
        let outputs = list(&ws.outputs())?;
        if let Some(keep) = args.keep {
            for o in &outputs {
                let dest = keep.join(&o.name);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::copy(ws.outputs().join(&o.name), dest)?;
            }
        }
        Ok(Trial {
            image: image.to_string(),
            exit_code,
            outputs,
        })
    }
    .await;
    let _ = ws.remove().await;
    outcome
}

async fn run_spec(
    backend: &dyn ComputeBackend,
    spec: &brizo_backend_core::JobSpec,
    config: &Config,
    on_log: &mut impl FnMut(&str),
) -> anyhow::Result<i64> {
    backend.start(spec).await.map_err(|e| {
        anyhow::anyhow!("{e} (for a trial the image must be on your Docker engine: docker pull it)")
    })?;
    let mut logs = backend.logs(&spec.job_id);
    let deadline = std::time::Duration::from_secs(config.limits.default_timeout_secs);
    let follow = async {
        let mut pending = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = pending.find('\n') {
                on_log(&pending[..i]);
                pending.drain(..=i);
            }
        }
        if !pending.is_empty() {
            on_log(&pending);
        }
    };
    if tokio::time::timeout(deadline, follow).await.is_err() {
        backend.stop(&spec.job_id).await?;
        bail!(
            "the algorithm ran longer than {} s and was killed",
            deadline.as_secs()
        );
    }
    Ok(backend.wait(&spec.job_id).await?.exit_code)
}

fn list(dir: &Path) -> anyhow::Result<Vec<OutputFile>> {
    let mut out = vec![];
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel: PathBuf = entry.path().strip_prefix(dir)?.to_path_buf();
        let d = crate::proof::digest::file(entry.path())?;
        out.push(OutputFile {
            name: rel.to_string_lossy().into_owned(),
            size: d.size,
            sha256: d.sha256,
            plain_size: None,
            plain_sha256: None,
        });
    }
    Ok(out)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
