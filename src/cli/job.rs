//! `brizo job ...`: submit and follow jobs, read their logs and outputs, decide on approvals
//! and held outputs, rerun the job a receipt describes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

use super::{ServerArgs, client, say};
use crate::api::v2::JobStatus;
use crate::client::Client;
use crate::jobs::model::{AlgorithmSource, InputSource};
use crate::jobs::{JobRequest, Outcome};

#[derive(Subcommand)]
pub(super) enum JobCommand {
    /// Submit a job, follow it (phase and logs) and say where its outputs are.
    Run(RunArgs),
    /// Show a job.
    Status(JobArgs),
    /// Print a job's log (--follow: until it ends).
    Logs {
        #[command(flatten)]
        job: JobArgs,
        #[arg(long, short)]
        follow: bool,
    },
    /// Kill a job's run.
    Stop(JobArgs),
    /// Show what a job would run (the algorithm's code and sha256, image, consumer), to
    /// decide on a job waiting for approval.
    Review(JobArgs),
    /// Approve a job waiting for approval: it runs, with exactly the algorithm reviewed.
    Approve(Decision),
    /// Reject a job waiting for approval: it ends without running; the consumer is not charged.
    Reject(Refusal),
    /// List a job's outputs held for review (names, sizes, sha256); read one with --show.
    Held {
        #[command(flatten)]
        job: JobArgs,
        /// Print this held output's content.
        #[arg(long)]
        show: Option<String>,
    },
    /// Release a job's held outputs: they are published and the job goes on.
    Release(Decision),
    /// Withhold a job's held outputs: nothing is published, the consumer is not charged.
    Withhold(Refusal),
    /// Stop a job and remove all it left.
    Delete(JobArgs),
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

/// One job on one server: what most job commands take.
#[derive(Args)]
pub(super) struct JobArgs {
    id: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// A publisher's decision on a job (approve a run, release outputs).
#[derive(Args)]
pub(super) struct Decision {
    #[command(flatten)]
    job: JobArgs,
    /// Who decides, for the record and the receipt.
    #[arg(long)]
    by: Option<String>,
}

/// A decision against (reject a run, withhold outputs): it says why.
#[derive(Args)]
pub(super) struct Refusal {
    /// Why, for the consumer.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    decision: Decision,
}

#[derive(Args)]
pub(super) struct RunArgs {
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

pub(super) async fn job(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Run(args) => run_job(args).await,
        JobCommand::Status(job) => {
            let status = client(&job.server)?.status(&job.id).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        JobCommand::Logs { job, follow } => {
            to_stdout(client(&job.server)?.logs(&job.id, follow).await?).await
        }
        JobCommand::Stop(job) => {
            let status = client(&job.server)?.stop(&job.id).await?;
            println!(
                "stop requested for {}; it is {}",
                status.job_id, status.status_text
            );
            Ok(())
        }
        JobCommand::Review(job) => review(&client(&job.server)?, &job.id).await,
        JobCommand::Approve(Decision { job, by }) => {
            let status = client(&job.server)?.approve(&job.id, by.as_deref()).await?;
            println!(
                "job {} approved; it is {}",
                status.job_id, status.status_text
            );
            Ok(())
        }
        JobCommand::Reject(Refusal {
            decision: Decision { job, by },
            reason,
        }) => {
            let status = client(&job.server)?
                .reject(&job.id, by.as_deref(), &reason)
                .await?;
            println!("job {} rejected; it ends without running", status.job_id);
            Ok(())
        }
        JobCommand::Held { job, show } => held(&client(&job.server)?, &job.id, show).await,
        JobCommand::Release(Decision { job, by }) => {
            let status = client(&job.server)?
                .decide_outputs(&job.id, "release", by.as_deref(), None)
                .await?;
            println!("job {}: outputs released", status.job_id);
            Ok(())
        }
        JobCommand::Withhold(Refusal {
            decision: Decision { job, by },
            reason,
        }) => {
            let status = client(&job.server)?
                .decide_outputs(&job.id, "withhold", by.as_deref(), Some(&reason))
                .await?;
            println!(
                "job {}: outputs withheld; nothing is published",
                status.job_id
            );
            Ok(())
        }
        JobCommand::Delete(job) => {
            client(&job.server)?.delete(&job.id).await?;
            println!("job {} deleted", job.id);
            Ok(())
        }
        JobCommand::Rerun { receipt, server } => rerun(receipt, client(&server)?).await,
        JobCommand::List { server } => list(&client(&server)?).await,
    }
}

/// Lists a job's held outputs (size, sha256, name), or prints the one named `show`.
async fn held(client: &Client, id: &str, show: Option<String>) -> anyhow::Result<()> {
    if let Some(name) = show {
        return to_stdout(client.held_file(id, &name).await?).await;
    }
    for o in client.held(id).await? {
        println!("{:>12}  {}  {}", o.size, o.sha256, o.name);
    }
    Ok(())
}

/// One line per job: id, status, outcome, image.
async fn list(client: &Client) -> anyhow::Result<()> {
    for j in client.list().await? {
        let outcome = j.outcome.map(|o| o.as_str()).unwrap_or("-");
        println!(
            "{}  {:>2} {:<24} {:<14} {}",
            j.job_id, j.status, j.status_text, outcome, j.image
        );
    }
    Ok(())
}

/// Prints what a job would run, for the publisher deciding on it.
async fn review(client: &Client, id: &str) -> anyhow::Result<()> {
    let review = client.algorithm(id).await?;
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

/// Copies a response's body to stdout as it comes (a followed log, a held output).
async fn to_stdout(response: reqwest::Response) -> anyhow::Result<()> {
    let mut body = response.bytes_stream();
    let mut out = tokio::io::stdout();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?).await?;
        out.flush().await?;
    }
    Ok(())
}

async fn run_job(args: RunArgs) -> anyhow::Result<()> {
    let client = client(&args.server)?;
    let id = client.submit(&request_of(&args)?).await?;
    eprintln!("job {id} submitted");
    if let Ok(status) = client.status(&id).await {
        eprintln!(
            "  runs on backend {:?}: {}",
            status.backend, status.backend_reason
        );
    }
    let status = follow(&client, &id).await?;
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

/// The job the arguments describe.
fn request_of(args: &RunArgs) -> anyhow::Result<JobRequest> {
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
    Ok(JobRequest {
        image: args.image.clone(),
        entrypoint: args.entrypoint.clone(),
        algorithm,
        inputs: args.inputs.iter().map(|s| parse_input(s)).collect(),
        timeout_seconds: args.timeout,
        network: false,
        encrypt_to: args.encrypt_to.clone(),
    })
}

/// Follows the job to its end: its phase on a spinner (or as lines without a terminal) and
/// its log streaming above it; its last status.
async fn follow(client: &Client, id: &str) -> anyhow::Result<JobStatus> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    // Logs stream above the spinner while the job runs.
    let log_task = {
        let (client, id, bar) = (client.clone(), id.to_string(), bar.clone());
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
        let status = client.status(id).await?;
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
    Ok(status)
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

    /// The job commands' shared arguments (a job, a decision, a refusal) parse from the same
    /// command lines as before they were shared; clap's own check catches clashing names.
    #[test]
    fn decisions_parse_their_job_who_and_why() {
        use clap::{CommandFactory, Parser};
        super::super::Cli::command().debug_assert();
        #[derive(Parser)]
        struct Job {
            #[command(subcommand)]
            cmd: JobCommand,
        }
        let parse = |line: &[&str]| Job::try_parse_from([&["job"], line].concat()).map(|j| j.cmd);
        let Ok(JobCommand::Withhold(refusal)) = parse(&[
            "withhold",
            "j-1",
            "--reason",
            "identifies a person",
            "--by",
            "dana",
            "--server",
            "http://h:1",
        ]) else {
            panic!("withhold did not parse");
        };
        assert_eq!(refusal.decision.job.id, "j-1");
        assert_eq!(refusal.decision.job.server.server, "http://h:1");
        assert_eq!(refusal.decision.by.as_deref(), Some("dana"));
        assert_eq!(refusal.reason, "identifies a person");
        let Ok(JobCommand::Approve(decision)) = parse(&["approve", "j-2"]) else {
            panic!("approve did not parse");
        };
        assert_eq!((decision.job.id.as_str(), decision.by), ("j-2", None));
        let missing = parse(&["reject", "j-3"])
            .err()
            .expect("a reject needs a reason");
        assert!(missing.to_string().contains("--reason"), "{missing}");
        let Ok(JobCommand::Held { job, show }) = parse(&["held", "j-4", "--show", "sum.txt"])
        else {
            panic!("held did not parse");
        };
        assert_eq!((job.id.as_str(), show.as_deref()), ("j-4", Some("sum.txt")));
    }
}
