//! `brizo consumer ...`: the data scientist's side: try an algorithm on a dataset's sample,
//! order compute, run it over the v1 API, follow it and fetch the results and the receipt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::B256;
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{ChainArgs, key_from_env, split_image};
use crate::seal::ContentKey;
use crate::squid::{Algorithm, Consumer};

#[derive(Subcommand)]
pub(super) enum ConsumerCommand {
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
pub(super) struct TryArgs {
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

pub(super) async fn consumer(cmd: ConsumerCommand) -> anyhow::Result<()> {
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
    let consumer = connect(&chain)?;
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
    let agreement = terms.agreement_id;
    let status = follow_to_settlement(&consumer, agreement, &job).await?;
    let key = results_key(&consumer, &status, &job).await?;
    let log = print_log(&consumer, &status, &job, key.as_ref()).await?;
    print_outcome(&status);
    for url in status["resultsUrls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str())
    {
        println!("  result: {url}");
        if let Some(dir) = &download {
            let dest = save_result(&consumer, url, &job, key.as_ref(), dir).await?;
            println!("    saved {}", dest.display());
        }
    }
    save_receipt(&consumer, agreement, &job, download.as_deref(), log).await?;
    if status["outcome"] != "succeeded" {
        anyhow::bail!("job {job} did not succeed");
    }
    Ok(())
}

/// The consumer's key (BRIZO_CONSUMER_KEY), its chain connection and the deployment's
/// contracts.
fn connect(chain: &ChainArgs) -> anyhow::Result<Consumer> {
    let signer = key_from_env("BRIZO_CONSUMER_KEY")?;
    let (provider, _) =
        crate::chain::signing_provider(&chain.keeper_url, &hex::encode(signer.to_bytes()))?;
    let addresses = crate::chain::artifacts::Addresses::load(&chain.artifacts_dir, "development")?;
    Ok(Consumer {
        http: reqwest::Client::new(),
        service: chain.server.trim_end_matches('/').to_string(),
        signer,
        chain: provider,
        addresses,
    })
}

/// The job's v1 status once it has ended and its agreement is settled, printing each new
/// status on the way.
async fn follow_to_settlement(
    consumer: &Consumer,
    agreement: B256,
    job: &str,
) -> anyhow::Result<Value> {
    let mut last = 0;
    loop {
        let list = consumer
            .call(reqwest::Method::GET, agreement, Some(job))
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
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The content key of results encrypted to this consumer, opened with the consumer's key;
/// `None` when the results are plain.
async fn results_key(
    consumer: &Consumer,
    status: &Value,
    job: &str,
) -> anyhow::Result<Option<ContentKey>> {
    let Some(url) = status["resultsKeyUrl"].as_str().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let sealed = consumer.download(url, job).await?;
    let key = ContentKey::open(&sealed, &consumer.signer.to_bytes().0)?;
    println!("  results are encrypted to this consumer; decrypting them");
    Ok(Some(key))
}

/// Prints the algorithm's log, when it was published, and answers it (decrypted).
async fn print_log(
    consumer: &Consumer,
    status: &Value,
    job: &str,
    key: Option<&ContentKey>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(url) = status["algorithmLogUrl"].as_str().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let bytes = consumer.download(url, job).await?;
    let log = match key {
        Some(key) => key.decrypt_bytes(&bytes)?,
        None => bytes.to_vec(),
    };
    for line in String::from_utf8_lossy(&log).lines() {
        println!("  | {line}");
    }
    Ok(Some(log))
}

fn print_outcome(status: &Value) {
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
}

/// Downloads one result into `dir/outputs/`, decrypting it when it is encrypted; its path.
async fn save_result(
    consumer: &Consumer,
    url: &str,
    job: &str,
    key: Option<&ContentKey>,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let name = url.rsplit("/outputs/").next().unwrap_or("output");
    let dest = dir.join("outputs").join(name);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match key {
        // Decrypted in constant memory, straight from the downloaded ciphertext.
        Some(key) => {
            let sealed = dest.with_extension("sealed");
            std::fs::write(&sealed, consumer.download(url, job).await?)?;
            let result = key.decrypt_file(&sealed, &dest);
            let _ = std::fs::remove_file(&sealed);
            result?;
        }
        None => std::fs::write(&dest, consumer.download(url, job).await?)?,
    }
    Ok(dest)
}

/// Waits for the job's receipt (it follows settlement by a moment) and saves it, with the
/// log, into `download`; or prints where it is.
async fn save_receipt(
    consumer: &Consumer,
    agreement: B256,
    job: &str,
    download: Option<&Path>,
    log: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let receipt_url = loop {
        let list = consumer
            .call(reqwest::Method::GET, agreement, Some(job))
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
    match (&receipt_url, download) {
        (Some(url), Some(dir)) => {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("receipt.json"), consumer.download(url, job).await?)?;
            if let Some(log) = &log {
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
    Ok(())
}
