//! `brizo chain dev`: a local chain with the Ocean keeper contracts.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use indicatif::ProgressBar;

#[derive(Subcommand)]
pub(super) enum ChainCommand {
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

pub(super) async fn chain_dev(
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
