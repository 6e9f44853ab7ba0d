//! `brizo asset publish`: a dataset or an algorithm, as its publisher.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::{ChainArgs, key_from_env, split_image};
use crate::assets::ddo::SampleFile;
use crate::assets::publish::DatasetTerms;

#[derive(Subcommand)]
pub(super) enum AssetCommand {
    /// Publish a DDO (metadata store + DIDRegistry) and print its DID. The key is
    /// BRIZO_PUBLISHER_KEY.
    #[command(subcommand)]
    Publish(PublishCommand),
}

#[derive(Subcommand)]
pub(super) enum PublishCommand {
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

pub(super) async fn publish_asset(cmd: PublishCommand) -> anyhow::Result<()> {
    use crate::assets::publish::{self, AlgorithmTerms, Asset};
    let (asset, uploads, chain) = match cmd {
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
            let (sample, uploads) = read_samples(&samples)?;
            let price = alloy::primitives::utils::parse_units(&price, 18)
                .with_context(|| format!("--price {price:?}"))?
                .get_absolute();
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
                sample,
                containers: containers.iter().map(|c| split_image(c)).collect(),
            };
            (Asset::Dataset(terms), uploads, chain)
        }
        PublishCommand::Algorithm {
            name,
            file,
            container,
            entrypoint,
            chain,
        } => {
            let (image, tag) = split_image(&container);
            let terms = AlgorithmTerms {
                name,
                file,
                image,
                tag,
                entrypoint,
            };
            (Asset::Algorithm(terms), vec![], chain)
        }
    };
    let publisher = key_from_env("BRIZO_PUBLISHER_KEY")?;
    let (provider, _) =
        crate::chain::signing_provider(&chain.keeper_url, &hex::encode(publisher.to_bytes()))?;
    let addresses = crate::chain::artifacts::Addresses::load(&chain.artifacts_dir, "development")?;
    let did = publish::publish(&chain.server, &provider, &addresses, &publisher, &asset).await?;
    if !uploads.is_empty() {
        upload_samples(&chain.server, &did, uploads).await?;
    }
    println!("{did}");
    Ok(())
}

/// A sample file to upload: its name and contents.
type Upload = (String, Vec<u8>);

/// The sample files as the DDO declares them (name, size, sha256), and their contents to
/// upload once the DID exists.
fn read_samples(paths: &[PathBuf]) -> anyhow::Result<(Vec<SampleFile>, Vec<Upload>)> {
    let mut declared = vec![];
    let mut uploads = vec![];
    for path in paths {
        let bytes = std::fs::read(path).with_context(|| format!("--sample {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("--sample names no file")?;
        declared.push(SampleFile {
            name: name.clone(),
            size: bytes.len() as u64,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        });
        uploads.push((name, bytes));
    }
    Ok((declared, uploads))
}

/// Uploads the dataset's sample to the service (it serves it to anyone trying algorithms);
/// needs the operator token.
async fn upload_samples(server: &str, did: &str, uploads: Vec<Upload>) -> anyhow::Result<()> {
    let token = std::env::var("BRIZO_ADMIN_TOKEN").context(
        "uploading the sample needs the service's operator token: set BRIZO_ADMIN_TOKEN",
    )?;
    let http = reqwest::Client::new();
    for (name, bytes) in uploads {
        http.put(format!(
            "{}/api/v2/samples/{did}/{name}",
            server.trim_end_matches('/')
        ))
        .bearer_auth(&token)
        .body(bytes)
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("uploading sample file {name}"))?;
        eprintln!("sample file {name} uploaded");
    }
    Ok(())
}
