//! The command line: `brizo serve` for publishers, `brizo job ...` for people driving jobs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

use crate::client::Client;
use crate::config::{Config, Overrides};
use crate::jobs::model::{AlgorithmSource, InputSource};
use crate::jobs::{JobRequest, Outcome};

#[derive(Parser)]
#[command(
    name = "brizo",
    version,
    about = "Compute-to-data: run algorithms next to a publisher's data"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: HTTP API and the job engine.
    Serve(ServeArgs),
    /// Drive jobs on a running service.
    #[command(subcommand)]
    Job(JobCommand),
    /// A local chain with the Ocean keeper contracts.
    #[command(subcommand)]
    Chain(ChainCommand),
    /// Publish assets (datasets, algorithms) as their publisher.
    #[command(subcommand)]
    Asset(AssetCommand),
    /// Use a dataset as a data scientist: order compute, run, fetch the results (v1 API).
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// Proofs of computation.
    #[command(subcommand)]
    Proof(ProofCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration that uses what terraform/modules/aws, terraform/modules/azure or
    /// terraform/modules/gcp
    /// created, from `terraform output -json > outputs.json`. Save it and pass it to
    /// `brizo serve --config`.
    FromTerraform {
        outputs: PathBuf,
        /// Name of the module's backend in [[backends]] (default: `aws`, `azure` or `gcp`).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum ProofCommand {
    /// Check a receipt: its hash and the provider's signature; with --outputs and --logs, the
    /// files one holds; with --keeper-url, the anchor on chain. Exits non-zero at the first
    /// mismatch, naming it.
    Verify {
        receipt: PathBuf,
        /// Folder holding the job's outputs (as downloaded).
        #[arg(long)]
        outputs: Option<PathBuf>,
        /// The job's log.
        #[arg(long)]
        logs: Option<PathBuf>,
        /// Ethereum node to check the on-chain anchor against.
        #[arg(long)]
        keeper_url: Option<String>,
        /// The provider address the receipt must be signed by (default: the one it names).
        #[arg(long)]
        provider: Option<String>,
    },
}

#[derive(Args, Clone)]
struct ChainArgs {
    /// URL of the brizo service.
    #[arg(long, env = "BRIZO_SERVER", default_value = "http://127.0.0.1:8030")]
    server: String,
    /// Ethereum node with the keeper contracts.
    #[arg(
        long,
        env = "BRIZO_KEEPER_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    keeper_url: String,
    /// Ocean-style artifacts of the deployment.
    #[arg(long, env = "BRIZO_ARTIFACTS_DIR", default_value = "artifacts")]
    artifacts_dir: PathBuf,
}

#[derive(Subcommand)]
enum AssetCommand {
    /// Publish a DDO (metadata store + DIDRegistry) and print its DID. The key is
    /// BRIZO_PUBLISHER_KEY.
    #[command(subcommand)]
    Publish(PublishCommand),
}

#[derive(Subcommand)]
enum PublishCommand {
    /// A dataset with a compute service; its file locations are encrypted to the provider.
    Dataset {
        #[arg(long)]
        name: String,
        /// A file location (file:// under the provider's dataset roots, s3://, https://...); repeatable.
        #[arg(long = "file", required = true)]
        files: Vec<String>,
        /// Price of one compute job, in OCEAN (18 decimals).
        #[arg(long)]
        price: String,
        /// Longest a job may run, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Allow raw code (algorithmMeta), not only published algorithms.
        #[arg(long)]
        allow_raw: bool,
        /// Only these algorithm DIDs may run (repeatable; none: any published algorithm).
        #[arg(long = "trusted")]
        trusted: Vec<String>,
        /// Give jobs on this dataset a network.
        #[arg(long)]
        allow_network: bool,
        /// Hold each job until the publisher approves it (`brizo job approve`).
        #[arg(long)]
        requires_approval: bool,
        /// Hold each job's outputs until the publisher releases them (`brizo job release`).
        #[arg(long)]
        review_outputs: bool,
        /// Encrypt every job's results to its consumer (they alone can read them).
        #[arg(long)]
        encrypt_results: bool,
        /// A file of the dataset's public sample, for trying algorithms before buying
        /// (repeatable). Declared in the DDO by sha256 and uploaded to the service (needs
        /// BRIZO_ADMIN_TOKEN).
        #[arg(long = "sample")]
        samples: Vec<PathBuf>,
        /// A supported image, image:tag (repeatable; none: any the engine has).
        #[arg(long = "container")]
        containers: Vec<String>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// An algorithm: its code's location and the container it runs in.
    Algorithm {
        #[arg(long)]
        name: String,
        #[arg(long)]
        file: String,
        /// image:tag
        #[arg(long)]
        container: String,
        #[arg(long, default_value = "python3 $ALGO")]
        entrypoint: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
}

#[derive(Subcommand)]
enum ConsumerCommand {
    /// Order compute on a dataset (agreement + locked price), run an algorithm through the v1
    /// API with signed requests, follow it, download the results. The key is BRIZO_CONSUMER_KEY.
    Compute {
        #[arg(long)]
        dataset: String,
        /// A published algorithm.
        #[arg(long, conflicts_with = "rawcode", required_unless_present = "rawcode")]
        algorithm: Option<String>,
        /// A file of raw code (if the dataset allows it), run in --container.
        #[arg(long, requires = "container")]
        rawcode: Option<PathBuf>,
        #[arg(long)]
        container: Option<String>,
        #[arg(long, default_value = "python3 $ALGO")]
        entrypoint: String,
        /// Save the results here (decrypted, when they are encrypted to you).
        #[arg(long)]
        download: Option<PathBuf>,
        /// Have the results encrypted to your key: only you can read them.
        #[arg(long)]
        encrypt: bool,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Try an algorithm on the dataset's public sample, on this machine's Docker engine, in the
    /// same image, layout and isolation as the real job: its log and outputs, before paying.
    Try(TryArgs),
}

#[derive(Args)]
struct TryArgs {
    #[arg(long)]
    dataset: String,
    /// The algorithm's code, as the real job would run it ($ALGO).
    #[arg(long)]
    algorithm: PathBuf,
    /// image:tag (default: the dataset's first supported container).
    #[arg(long)]
    container: Option<String>,
    #[arg(long, default_value = "python3 $ALGO")]
    entrypoint: String,
    /// Copy the outputs here.
    #[arg(long)]
    download: Option<PathBuf>,
    /// URL of the brizo service that serves the dataset.
    #[arg(long, env = "BRIZO_SERVER", default_value = "http://127.0.0.1:8030")]
    server: String,
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Start anvil, deploy and set up the keeper contracts 0.13.2 from their real artifacts,
    /// fund the development accounts, write Ocean-style artifacts; runs until Ctrl-C.
    Dev {
        #[arg(long, default_value_t = 8545)]
        port: u16,
        /// Where `<Contract>.development.json` files (address + abi) are written.
        #[arg(long, default_value = "artifacts")]
        artifacts_dir: PathBuf,
        /// anvil binary [default: .state/tools/anvil, from scripts/chain-deps.sh].
        #[arg(long)]
        anvil: Option<PathBuf>,
        /// The npm package's artifacts folder [default: .state/tools/keeper-contracts-0.13.2/artifacts].
        #[arg(long)]
        keeper_contracts: Option<PathBuf>,
        /// Also write a JSON summary (URL, chain id, addresses, accounts) to this file.
        #[arg(long)]
        summary: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file layered over the embedded defaults.
    #[arg(long, env = "BRIZO_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8030].
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    /// Store, job folders, logs and results [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Ethereum node with the Ocean keeper contracts (enables the v1 Squid API).
    #[arg(long)]
    keeper_url: Option<String>,
    /// Ocean-style artifacts of the keeper deployment (`<Contract>.<network>.json`).
    #[arg(long)]
    artifacts_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// URL of the brizo service.
    #[arg(
        long,
        env = "BRIZO_SERVER",
        default_value = "http://127.0.0.1:8030",
        global = true
    )]
    server: String,
    /// Operator token.
    #[arg(long, env = "BRIZO_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Submit a job, follow it (phase and logs) and say where its outputs are.
    Run(RunArgs),
    /// Show a job.
    Status {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a job's log (--follow: until it ends).
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Kill a job's run.
    Stop {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show what a job would run (the algorithm's code and sha256, image, consumer), to
    /// decide on a job waiting for approval.
    Review {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a job waiting for approval: it runs, with exactly the algorithm reviewed.
    Approve {
        id: String,
        /// Who approves, for the record and the receipt.
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Reject a job waiting for approval: it ends without running; the consumer is not charged.
    Reject {
        id: String,
        /// Why, for the consumer.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List a job's outputs held for review (names, sizes, sha256); read one with --show.
    Held {
        id: String,
        /// Print this held output's content.
        #[arg(long)]
        show: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Release a job's held outputs: they are published and the job goes on.
    Release {
        id: String,
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Withhold a job's held outputs: nothing is published, the consumer is not charged.
    Withhold {
        id: String,
        /// Why, for the consumer.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop a job and remove all it left.
    Delete {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List jobs.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the job a receipt describes again (same algorithm and inputs, the image pinned to
    /// the digest that ran) and report whether the outputs' hashes match. Exits non-zero when
    /// they do not.
    Rerun {
        receipt: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Container image, name:tag.
    #[arg(long)]
    image: String,
    /// Command line; $ALGO becomes the algorithm's path.
    #[arg(long, default_value = "python3 $ALGO")]
    entrypoint: String,
    /// File holding the algorithm's code.
    #[arg(
        long,
        conflicts_with = "algorithm_url",
        required_unless_present = "algorithm_url"
    )]
    algorithm: Option<PathBuf>,
    /// URL of the algorithm's code.
    #[arg(long)]
    algorithm_url: Option<String>,
    /// Encrypt the outputs and log to this secp256k1 public key (hex): only its holder reads them.
    #[arg(long)]
    encrypt_to: Option<String>,
    /// An input, `URL` or `NAME=URL` (repeatable).
    #[arg(long = "input")]
    inputs: Vec<String>,
    /// Wall-clock limit in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Save the outputs into this folder when the job ends.
    #[arg(long)]
    download: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime starts")
    };
    match cli.command {
        Command::Serve(args) => {
            init_tracing();
            let chain = (args.keeper_url.is_some() || args.artifacts_dir.is_some()).then_some(
                crate::config::ChainOverrides {
                    keeper_url: args.keeper_url,
                    artifacts_dir: args.artifacts_dir,
                },
            );
            let config = Config::load(
                args.config.as_deref(),
                Overrides {
                    bind: args.bind,
                    data_dir: args.data_dir,
                    chain,
                },
            )?;
            // The engine shares actix's system runtime; make it multi-threaded so drivers,
            // log copies and staging run beside the HTTP server's main loop.
            actix_web::rt::System::with_tokio_rt(runtime).block_on(crate::app::serve(config))
        }
        Command::Job(cmd) => runtime().block_on(job(cmd)),
        Command::Asset(AssetCommand::Publish(cmd)) => runtime().block_on(publish_asset(cmd)),
        Command::Consumer(cmd) => runtime().block_on(consumer(cmd)),
        Command::Config(ConfigCommand::FromTerraform { outputs, name }) => {
            let raw = std::fs::read(&outputs)
                .with_context(|| format!("reading {}", outputs.display()))?;
            let value: serde_json::Value = serde_json::from_slice(&raw)
                .with_context(|| format!("{} is not JSON", outputs.display()))?;
            print!(
                "{}",
                crate::terraform::config_from_outputs(&value, name.as_deref())
                    .map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Command::Proof(ProofCommand::Verify {
            receipt,
            outputs,
            logs,
            keeper_url,
            provider,
        }) => runtime().block_on(verify_receipt(receipt, outputs, logs, keeper_url, provider)),
        Command::Chain(ChainCommand::Dev {
            port,
            artifacts_dir,
            anvil,
            keeper_contracts,
            summary,
        }) => {
            let mut options = crate::chain::dev::DevOptions::new(port, artifacts_dir);
            options.anvil = anvil.unwrap_or(options.anvil);
            options.keeper_contracts = keeper_contracts.unwrap_or(options.keeper_contracts);
            runtime().block_on(chain_dev(options, summary))
        }
    }
}

async fn rerun(path: PathBuf, client: Client) -> anyhow::Result<()> {
    use crate::proof::receipt::SignedReceipt;
    let original: SignedReceipt = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a brizo receipt", path.display()))?;
    crate::proof::verify::check_signature(&original, None)
        .map_err(|e| anyhow::anyhow!("the receipt does not verify: {e}"))?;
    let old = &original.receipt;
    let id = client.rerun(&old.job_id).await?;
    println!(
        "rerunning job {} as job {id} in {}",
        old.job_id,
        old.image_digest.as_deref().unwrap_or(&old.image)
    );
    let rerun = loop {
        let status = client.status(&id).await?;
        if status.phase.is_terminal() && status.receipt_hash.is_some() {
            break client.receipt(&id).await?;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let new = &rerun.receipt;
    let mut same = true;
    let mut line = |what: &str, a: String, b: String| {
        let ok = a == b;
        same &= ok;
        println!(
            "  {} {what}: {}",
            if ok { "same     " } else { "DIFFERENT" },
            if ok { a } else { format!("{a} then, {b} now") }
        );
    };
    let shown = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    line(
        "image digest",
        shown(old.image_digest.clone()),
        shown(new.image_digest.clone()),
    );
    line(
        "algorithm sha256",
        shown(old.algorithm.sha256.clone()),
        shown(new.algorithm.sha256.clone()),
    );
    for (a, b) in old.inputs.iter().zip(&new.inputs) {
        line(
            &format!("input {}/{}", a.name, a.index),
            shown(a.sha256.clone()),
            shown(b.sha256.clone()),
        );
    }
    line(
        "exit code",
        shown(old.exit_code.map(|c| c.to_string())),
        shown(new.exit_code.map(|c| c.to_string())),
    );
    let names = |r: &crate::proof::receipt::Receipt| {
        r.outputs
            .iter()
            .map(|o| o.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    line("outputs", names(old), names(new));
    for (a, b) in old.outputs.iter().zip(&new.outputs) {
        line(
            &format!("output {}", a.name),
            a.sha256.clone(),
            b.sha256.clone(),
        );
    }
    if same {
        println!("the rerun reproduces the receipt's outputs");
        Ok(())
    } else {
        anyhow::bail!(
            "the rerun does not reproduce the receipt (a non-deterministic algorithm, or changed inputs)"
        )
    }
}

async fn verify_receipt(
    path: PathBuf,
    outputs: Option<PathBuf>,
    logs: Option<PathBuf>,
    keeper_url: Option<String>,
    provider: Option<String>,
) -> anyhow::Result<()> {
    use crate::proof::{receipt::SignedReceipt, verify};
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let signed: SignedReceipt = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a brizo receipt", path.display()))?;
    let provider = provider
        .map(|p| p.parse::<alloy::primitives::Address>())
        .transpose()
        .context("--provider is not an address")?;
    let fail = |e: verify::Mismatch| anyhow::anyhow!("verification failed: {e}");
    verify::check_signature(&signed, provider).map_err(fail)?;
    println!(
        "ok  hash {} of the canonical receipt, signed by {}",
        signed.hash, signed.receipt.provider
    );
    if let Some(dir) = outputs {
        verify::check_outputs(&signed, &dir).map_err(fail)?;
        println!(
            "ok  {} output(s) in {} match",
            signed.receipt.outputs.len(),
            dir.display()
        );
    }
    if let Some(log) = logs {
        verify::check_logs(&signed, &log).map_err(fail)?;
        println!("ok  the log matches");
    }
    if let Some(url) = keeper_url {
        let registry = signed
            .receipt
            .contracts
            .get("DIDRegistry")
            .context("the receipt names no DIDRegistry")?
            .parse()?;
        let chain = crate::chain::provider(&url)?;
        verify::check_anchor(&signed, &chain, registry)
            .await
            .map_err(fail)?;
        println!(
            "ok  anchored on chain under {}",
            signed.anchor.as_ref().map(|a| a.did.as_str()).unwrap_or("")
        );
    }
    println!(
        "job {}: {} (exit code {}), image {} ({})",
        signed.receipt.job_id,
        signed.receipt.outcome,
        signed
            .receipt
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        signed.receipt.image,
        signed
            .receipt
            .image_digest
            .as_deref()
            .unwrap_or("no digest")
    );
    Ok(())
}

fn key_from_env(var: &str) -> anyhow::Result<alloy::signers::local::PrivateKeySigner> {
    let key = std::env::var(var)
        .with_context(|| format!("set {var} to the account's private key (hex)"))?;
    key.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{var} is not a valid private key"))
}

fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    }
}

async fn publish_asset(cmd: PublishCommand) -> anyhow::Result<()> {
    use crate::assets::publish::{self, AlgorithmTerms, Asset, DatasetTerms};
    let mut uploads: Vec<(String, Vec<u8>)> = vec![];
    let (asset, chain) = match cmd {
        PublishCommand::Dataset {
            name,
            files,
            price,
            timeout,
            allow_raw,
            trusted,
            allow_network,
            requires_approval,
            review_outputs,
            encrypt_results,
            samples,
            containers,
            chain,
        } => {
            let mut sample = vec![];
            for path in &samples {
                let bytes =
                    std::fs::read(path).with_context(|| format!("--sample {}", path.display()))?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .context("--sample names no file")?;
                sample.push((
                    crate::assets::ddo::SampleFile {
                        name,
                        size: bytes.len() as u64,
                        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
                    },
                    bytes,
                ));
            }
            uploads = sample
                .iter()
                .map(|(f, b)| (f.name.clone(), b.clone()))
                .collect();
            let price = alloy::primitives::utils::parse_units(&price, 18)
                .with_context(|| format!("--price {price:?}"))?
                .get_absolute();
            let containers = containers.iter().map(|c| split_image(c)).collect();
            let terms = DatasetTerms {
                name,
                files,
                price,
                timeout_secs: timeout,
                allow_raw_algorithm: allow_raw,
                trusted_algorithms: trusted,
                allow_network_access: allow_network,
                requires_approval,
                review_outputs,
                encrypt_results,
                sample: sample.into_iter().map(|(f, _)| f).collect(),
                containers,
            };
            (Asset::Dataset(terms), chain)
        }
        PublishCommand::Algorithm {
            name,
            file,
            container,
            entrypoint,
            chain,
        } => {
            let (image, tag) = split_image(&container);
            (
                Asset::Algorithm(AlgorithmTerms {
                    name,
                    file,
                    image,
                    tag,
                    entrypoint,
                }),
                chain,
            )
        }
    };
    let publisher = key_from_env("BRIZO_PUBLISHER_KEY")?;
    let (provider, _) =
        crate::chain::signing_provider(&chain.keeper_url, &hex::encode(publisher.to_bytes()))?;
    let addresses = crate::chain::artifacts::Addresses::load(&chain.artifacts_dir, "development")?;
    let did = publish::publish(&chain.server, &provider, &addresses, &publisher, &asset).await?;
    if !uploads.is_empty() {
        let token = std::env::var("BRIZO_ADMIN_TOKEN").context(
            "uploading the sample needs the service's operator token: set BRIZO_ADMIN_TOKEN",
        )?;
        let http = reqwest::Client::new();
        for (name, bytes) in uploads {
            http.put(format!(
                "{}/api/v2/samples/{did}/{name}",
                chain.server.trim_end_matches('/')
            ))
            .bearer_auth(&token)
            .body(bytes)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("uploading sample file {name}"))?;
            eprintln!("sample file {name} uploaded");
        }
    }
    println!("{did}");
    Ok(())
}

async fn try_sample(args: TryArgs) -> anyhow::Result<()> {
    println!(
        "trying {} on the sample of {}",
        args.algorithm.display(),
        args.dataset
    );
    let trial = crate::trial::run(
        crate::trial::TrialArgs {
            server: &args.server,
            dataset: &args.dataset,
            algorithm: &args.algorithm,
            container: args.container.as_deref(),
            entrypoint: &args.entrypoint,
            keep: args.download.as_deref(),
        },
        |line| println!("  | {line}"),
    )
    .await?;
    println!("  image: {}", trial.image);
    println!("  exit code: {}", trial.exit_code);
    for o in &trial.outputs {
        println!(
            "  output {} ({} bytes, sha256 {})",
            o.name, o.size, o.sha256
        );
    }
    if let Some(dir) = &args.download {
        println!("  outputs copied to {}", dir.display());
    }
    if trial.exit_code != 0 {
        anyhow::bail!(
            "the algorithm exited with code {} on the sample",
            trial.exit_code
        );
    }
    Ok(())
}

async fn consumer(cmd: ConsumerCommand) -> anyhow::Result<()> {
    use crate::squid::{Algorithm, Consumer};
    let cmd = match cmd {
        ConsumerCommand::Try(args) => return try_sample(args).await,
        other => other,
    };
    let ConsumerCommand::Compute {
        dataset,
        algorithm,
        rawcode,
        container,
        entrypoint,
        download,
        encrypt,
        chain,
    } = cmd
    else {
        unreachable!("handled above")
    };
    let signer = key_from_env("BRIZO_CONSUMER_KEY")?;
    let (provider, _) =
        crate::chain::signing_provider(&chain.keeper_url, &hex::encode(signer.to_bytes()))?;
    let addresses = crate::chain::artifacts::Addresses::load(&chain.artifacts_dir, "development")?;
    let consumer = Consumer {
        http: reqwest::Client::new(),
        service: chain.server.trim_end_matches('/').to_string(),
        signer,
        chain: provider,
        addresses,
    };
    println!("consumer {}", consumer.address());
    let terms = consumer.order(&dataset, 0).await?;
    println!(
        "  agreement {} created; {} OCEAN locked in escrow",
        terms.agreement_id,
        alloy::primitives::utils::format_units(terms.price, 18)?
    );
    let choice = match (algorithm, rawcode) {
        (Some(did), _) => Algorithm::Did(did),
        (None, Some(path)) => {
            let (image, tag) = split_image(container.as_deref().unwrap_or_default());
            let code = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Algorithm::Meta(
                serde_json::json!({"rawcode": code, "container": {"image": image, "tag": tag, "entrypoint": entrypoint}}),
            )
        }
        (None, None) => anyhow::bail!("give --algorithm DID or --rawcode FILE"),
    };
    let mut output = serde_json::json!({"publishOutput": 0, "publishAlgorithmLog": 1});
    if encrypt {
        output["encrypt"] = serde_json::json!(true);
    }
    let job = consumer
        .start_with(terms.agreement_id, &choice, output)
        .await?;
    println!("  compute started over the v1 API (signed request): job {job}");
    let mut last = 0;
    let status = loop {
        let list = consumer
            .call(reqwest::Method::GET, terms.agreement_id, Some(&job))
            .await?;
        let status = list
            .into_iter()
            .next()
            .context("the service lists no such job")?;
        let code = status["status"].as_i64().unwrap_or(0);
        if code != last {
            println!(
                "  status {code}: {}",
                status["statusText"].as_str().unwrap_or("")
            );
            last = code;
        }
        if matches!(code, 31 | 32 | 70) && !status["settlement"].is_null() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Results encrypted to this consumer: open the content key with the consumer's key.
    let key = match status["resultsKeyUrl"].as_str().filter(|u| !u.is_empty()) {
        Some(url) => {
            let sealed = consumer.download(url, &job).await?;
            let key = crate::seal::ContentKey::open(&sealed, &consumer.signer.to_bytes().0)?;
            println!("  results are encrypted to this consumer; decrypting them");
            Some(key)
        }
        None => None,
    };
    let opened = |bytes: bytes::Bytes| -> anyhow::Result<Vec<u8>> {
        match &key {
            Some(key) => Ok(key.decrypt_bytes(&bytes)?),
            None => Ok(bytes.to_vec()),
        }
    };
    let mut log_text = None;
    if let Some(url) = status["algorithmLogUrl"].as_str().filter(|u| !u.is_empty()) {
        let log = opened(consumer.download(url, &job).await?)?;
        for line in String::from_utf8_lossy(&log).lines() {
            println!("  | {line}");
        }
        log_text = Some(log);
    }
    println!("  outcome: {}", status["outcome"].as_str().unwrap_or("?"));
    if let Some(error) = status["error"].as_str() {
        println!("  reason: {error}");
    }
    println!(
        "  settlement: {} ({})",
        status["settlement"]["state"].as_str().unwrap_or("?"),
        status["settlement"]["reason"].as_str().unwrap_or("")
    );
    if let Some(tx) = status["settlement"]["tx"].as_str() {
        println!("  reward transaction: {tx}");
    }
    for url in status["resultsUrls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str())
    {
        println!("  result: {url}");
        if let Some(dir) = &download {
            let name = url.rsplit("/outputs/").next().unwrap_or("output");
            let dest = dir.join("outputs").join(name);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match &key {
                // Decrypted in constant memory, straight from the downloaded ciphertext.
                Some(key) => {
                    let sealed = dest.with_extension("sealed");
                    std::fs::write(&sealed, consumer.download(url, &job).await?)?;
                    let result = key.decrypt_file(&sealed, &dest);
                    let _ = std::fs::remove_file(&sealed);
                    result?;
                }
                None => std::fs::write(&dest, consumer.download(url, &job).await?)?,
            }
            println!("    saved {}", dest.display());
        }
    }
    // The receipt follows settlement by a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let receipt_url = loop {
        let list = consumer
            .call(reqwest::Method::GET, terms.agreement_id, Some(&job))
            .await?;
        if let Some(url) = list
            .first()
            .and_then(|s| s["receiptUrl"].as_str())
            .filter(|u| !u.is_empty())
        {
            break Some(url.to_string());
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    match (&receipt_url, &download) {
        (Some(url), Some(dir)) => {
            std::fs::create_dir_all(dir)?;
            std::fs::write(
                dir.join("receipt.json"),
                consumer.download(url, &job).await?,
            )?;
            if let Some(log) = &log_text {
                std::fs::write(dir.join("algorithm.log"), log)?;
            }
            println!(
                "  receipt (proof of computation) saved {}",
                dir.join("receipt.json").display()
            );
        }
        (Some(url), None) => println!("  receipt: {url}"),
        (None, _) => println!("  no receipt yet"),
    }
    if status["outcome"] != "succeeded" {
        anyhow::bail!("job {job} did not succeed");
    }
    Ok(())
}

async fn chain_dev(
    options: crate::chain::dev::DevOptions,
    summary: Option<PathBuf>,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!(
        "starting anvil on 127.0.0.1:{} and deploying the keeper contracts 0.13.2",
        options.port
    ));
    let chain = crate::chain::dev::DevChain::start(&options).await;
    bar.finish_and_clear();
    let chain = chain?;
    println!(
        "chain development at {} (chain id {})",
        chain.url, chain.chain_id
    );
    println!("artifacts written to {}", chain.artifacts_dir.display());
    for (name, address) in &chain.addresses.0 {
        println!("  {name:<26} {address}");
    }
    println!("accounts (anvil's public development keys; never use them elsewhere):");
    for a in &chain.accounts {
        println!("  {} {}  {}", a.address, a.private_key, a.role);
    }
    if let Some(path) = summary {
        let doc = serde_json::json!({"url": chain.url, "chainId": chain.chain_id, "artifactsDir": chain.artifacts_dir,
                                     "contracts": chain.addresses, "accounts": chain.accounts});
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    }
    println!("running; Ctrl-C stops the chain");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(chain);
    Ok(())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BRIZO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,actix_server=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn client(server: &ServerArgs) -> anyhow::Result<Client> {
    let token = server
        .token
        .clone()
        .context("no operator token: pass --token or set BRIZO_ADMIN_TOKEN")?;
    Ok(Client::new(&server.server, &token))
}

async fn job(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Run(args) => run_job(args).await,
        JobCommand::Status { id, server } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&client(&server)?.status(&id).await?)?
            );
            Ok(())
        }
        JobCommand::Logs { id, follow, server } => {
            let mut body = client(&server)?.logs(&id, follow).await?.bytes_stream();
            let mut out = tokio::io::stdout();
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk?).await?;
                out.flush().await?;
            }
            Ok(())
        }
        JobCommand::Stop { id, server } => {
            let status = client(&server)?.stop(&id).await?;
            println!(
                "stop requested for {}; it is {}",
                status.job_id, status.status_text
            );
            Ok(())
        }
        JobCommand::Review { id, server } => {
            let review = client(&server)?.algorithm(&id).await?;
            for (label, key) in [
                ("consumer", "consumer"),
                ("agreement", "agreementId"),
                ("dataset", "datasetDid"),
                ("algorithm", "algorithmDid"),
                ("image", "image"),
                ("digest", "imageDigest"),
                ("entrypoint", "entrypoint"),
                ("sha256", "sha256"),
                ("size", "size"),
            ] {
                match &review[key] {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(s) => println!("{label:<11} {s}"),
                    other => println!("{label:<11} {other}"),
                }
            }
            match review["code"].as_str() {
                Some(code) => println!("--- code ---\n{code}"),
                None => println!("(the code is not text)"),
            }
            Ok(())
        }
        JobCommand::Approve { id, by, server } => {
            let status = client(&server)?.approve(&id, by.as_deref()).await?;
            println!(
                "job {} approved; it is {}",
                status.job_id, status.status_text
            );
            Ok(())
        }
        JobCommand::Reject {
            id,
            reason,
            by,
            server,
        } => {
            let status = client(&server)?.reject(&id, by.as_deref(), &reason).await?;
            println!("job {} rejected; it ends without running", status.job_id);
            Ok(())
        }
        JobCommand::Held { id, show, server } => {
            let client = client(&server)?;
            match show {
                Some(name) => {
                    let mut body = client.held_file(&id, &name).await?.bytes_stream();
                    let mut out = tokio::io::stdout();
                    while let Some(chunk) = body.next().await {
                        out.write_all(&chunk?).await?;
                    }
                    out.flush().await?;
                }
                None => {
                    for o in client.held(&id).await? {
                        println!("{:>12}  {}  {}", o.size, o.sha256, o.name);
                    }
                }
            }
            Ok(())
        }
        JobCommand::Release { id, by, server } => {
            let status = client(&server)?
                .decide_outputs(&id, "release", by.as_deref(), None)
                .await?;
            println!("job {}: outputs released", status.job_id);
            Ok(())
        }
        JobCommand::Withhold {
            id,
            reason,
            by,
            server,
        } => {
            let status = client(&server)?
                .decide_outputs(&id, "withhold", by.as_deref(), Some(&reason))
                .await?;
            println!(
                "job {}: outputs withheld; nothing is published",
                status.job_id
            );
            Ok(())
        }
        JobCommand::Delete { id, server } => {
            client(&server)?.delete(&id).await?;
            println!("job {id} deleted");
            Ok(())
        }
        JobCommand::Rerun { receipt, server } => rerun(receipt, client(&server)?).await,
        JobCommand::List { server } => {
            for j in client(&server)?.list().await? {
                let outcome = j.outcome.map(|o| o.as_str()).unwrap_or("-");
                println!(
                    "{}  {:>2} {:<24} {:<14} {}",
                    j.job_id, j.status, j.status_text, outcome, j.image
                );
            }
            Ok(())
        }
    }
}

/// A line above the spinner, or on stdout when there is no terminal to draw one on.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

fn parse_input(spec: &str) -> InputSource {
    // NAME=URL, but a URL itself may hold '=' (queries): only a plain name counts as one.
    match spec.split_once('=') {
        Some((name, url)) if !name.contains(':') && !name.contains('/') => InputSource {
            url: url.into(),
            name: Some(name.into()),
        },
        _ => InputSource {
            url: spec.into(),
            name: None,
        },
    }
}

async fn run_job(args: RunArgs) -> anyhow::Result<()> {
    let client = client(&args.server)?;
    let algorithm = match (&args.algorithm, &args.algorithm_url) {
        (Some(path), _) => AlgorithmSource {
            rawcode: Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            url: None,
            did: None,
        },
        (None, url) => AlgorithmSource {
            rawcode: None,
            url: url.clone(),
            did: None,
        },
    };
    let request = JobRequest {
        image: args.image.clone(),
        entrypoint: args.entrypoint.clone(),
        algorithm,
        inputs: args.inputs.iter().map(|s| parse_input(s)).collect(),
        timeout_seconds: args.timeout,
        network: false,
        encrypt_to: args.encrypt_to.clone(),
    };
    let id = client.submit(&request).await?;
    eprintln!("job {id} submitted");
    if let Ok(status) = client.status(&id).await {
        eprintln!(
            "  runs on backend {:?}: {}",
            status.backend, status.backend_reason
        );
    }

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    // Logs stream above the spinner while the job runs.
    let log_task = {
        let (client, id, bar) = (client.clone(), id.clone(), bar.clone());
        tokio::spawn(async move {
            let Ok(res) = client.logs(&id, true).await else {
                return;
            };
            let mut body = res.bytes_stream();
            let mut pending = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(pos) = pending.find('\n') {
                    say(&bar, format!("  | {}", &pending[..pos]));
                    pending.drain(..=pos);
                }
            }
            if !pending.is_empty() {
                say(&bar, format!("  | {pending}"));
            }
        })
    };
    let mut last_status = 0;
    let status = loop {
        let status = client.status(&id).await?;
        bar.set_message(format!("{} ({})", status.status_text, status.status));
        if status.status != last_status && bar.is_hidden() {
            // No terminal (CI, a pipe): phases as plain lines instead of a spinner.
            say(
                &bar,
                format!("  phase {}: {}", status.status, status.status_text),
            );
        }
        last_status = status.status;
        if status.phase.is_terminal() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), log_task).await;
    bar.finish_and_clear();

    let outcome = status.outcome.unwrap_or(Outcome::Failed);
    println!("job {id}: {} ({})", outcome.as_str(), status.status_text);
    if let Some(code) = status.exit_code {
        println!("  exit code: {code}");
    }
    if let Some(error) = &status.error {
        println!("  reason: {error}");
    }
    if status.outputs.is_empty() {
        println!("  no outputs");
    }
    for o in &status.outputs {
        println!(
            "  output {} ({} bytes, sha256 {})",
            o.name, o.size, o.sha256
        );
        println!("    {}", client.output_url(&id, &o.name));
    }
    if let Some(dir) = &args.download {
        for o in &status.outputs {
            let dest = dir.join(&o.name);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let bytes = client.output(&id, &o.name).await?.bytes().await?;
            tokio::fs::write(&dest, &bytes).await?;
            println!("  saved {}", dest.display());
        }
    }
    if outcome != Outcome::Succeeded {
        anyhow::bail!("job {id} did not succeed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_take_an_optional_name() {
        assert_eq!(
            parse_input("census=file:///d/c.csv").name.as_deref(),
            Some("census")
        );
        assert_eq!(parse_input("census=file:///d/c.csv").url, "file:///d/c.csv");
        let signed = parse_input("https://host/x?sig=abc");
        assert_eq!(
            (signed.name, signed.url.as_str()),
            (None, "https://host/x?sig=abc")
        );
    }
}
