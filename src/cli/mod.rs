//! The command line: `brizo serve` for publishers, `brizo job ...` for people driving jobs,
//! `brizo asset` and `brizo consumer` for the two sides of a sale, `brizo proof` for anyone
//! holding a receipt. One module per command group; the shared arguments live here.

mod chain;
mod consumer;
mod job;
mod proof;
mod publish;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::ProgressBar;

use crate::client::Client;
use crate::config::{Config, Overrides};
use chain::ChainCommand;
use consumer::ConsumerCommand;
use job::JobCommand;
use proof::ProofCommand;
use publish::AssetCommand;

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
        Command::Job(cmd) => runtime().block_on(job::job(cmd)),
        Command::Asset(AssetCommand::Publish(cmd)) => {
            runtime().block_on(publish::publish_asset(cmd))
        }
        Command::Consumer(cmd) => runtime().block_on(consumer::consumer(cmd)),
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
        }) => runtime().block_on(proof::verify_receipt(
            receipt, outputs, logs, keeper_url, provider,
        )),
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
            runtime().block_on(chain::chain_dev(options, summary))
        }
    }
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

/// A line above the spinner, or on stdout when there is no terminal to draw one on.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}
