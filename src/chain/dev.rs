//! `brizo chain dev`: anvil on loopback with the real keeper contracts deployed and set up,
//! test accounts funded with Ocean tokens, and Ocean-style artifacts written for clients.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;

use super::artifacts::{self, Addresses};
use super::contracts::OceanToken;
use super::{ChainError, signing_provider, wait_for_node};
use crate::send_tx;

/// anvil's well-known development keys (from its default mnemonic). Public knowledge: never
/// use them on a real network.
pub const DEV_KEYS: [&str; 6] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
];

/// What each development account is for.
pub const ROLES: [&str; 6] = [
    "deployer (contract owner)",
    "initial minter",
    "publisher and provider",
    "consumer",
    "second consumer",
    "spare",
];

/// Ocean tokens (in wei) minted to every account but the deployer.
pub const FUNDING: u128 = 1_000 * 10u128.pow(18);

#[derive(Debug, Clone, serde::Serialize)]
pub struct DevAccount {
    pub role: &'static str,
    #[serde(serialize_with = "checksummed")]
    pub address: Address,
    pub private_key: &'static str,
}

fn checksummed<S: serde::Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&a.to_string())
}

pub fn dev_accounts() -> Vec<DevAccount> {
    DEV_KEYS
        .iter()
        .zip(ROLES)
        .map(|(key, role)| DevAccount {
            role,
            address: key.parse::<PrivateKeySigner>().expect("dev key").address(),
            private_key: key,
        })
        .collect()
}

/// A running development chain; anvil is stopped (by PID) when this is dropped.
pub struct DevChain {
    child: Child,
    pub url: String,
    pub chain_id: u64,
    pub addresses: Addresses,
    pub accounts: Vec<DevAccount>,
    pub artifacts_dir: PathBuf,
}

impl Drop for DevChain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where anvil and the keeper-contracts package are unless told otherwise: what
/// `scripts/chain-deps.sh` installs under `.state/tools`.
pub fn default_tools_dir() -> PathBuf {
    std::env::var_os("BRIZO_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".state/tools"))
}

pub struct DevOptions {
    pub port: u16,
    pub artifacts_dir: PathBuf,
    pub anvil: PathBuf,
    pub keeper_contracts: PathBuf,
}

impl DevOptions {
    pub fn new(port: u16, artifacts_dir: PathBuf) -> Self {
        let tools = default_tools_dir();
        Self {
            port,
            artifacts_dir,
            anvil: tools.join("anvil"),
            keeper_contracts: tools.join("keeper-contracts-0.13.2/artifacts"),
        }
    }
}

impl DevChain {
    pub async fn start(options: &DevOptions) -> Result<DevChain, ChainError> {
        check_exists(&options.anvil, "anvil")?;
        check_exists(
            &options
                .keeper_contracts
                .join("DIDRegistry.development.json"),
            "the keeper-contracts 0.13.2 artifacts",
        )?;
        let child = Command::new(&options.anvil)
            .args(["--host", "127.0.0.1", "--port", &options.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                ChainError::Config(format!("starting {}: {e}", options.anvil.display()))
            })?;
        let url = format!("http://127.0.0.1:{}", options.port);
        // From here on, dropping `chain` stops anvil, whatever fails next.
        let mut chain = DevChain {
            child,
            url,
            chain_id: 0,
            addresses: Addresses(Default::default()),
            accounts: dev_accounts(),
            artifacts_dir: options.artifacts_dir.clone(),
        };
        let (deployer, owner) = signing_provider(&chain.url, DEV_KEYS[0])?;
        chain.chain_id = wait_for_node(&deployer, Duration::from_secs(20)).await?;
        let minter = chain.accounts[1].address;
        chain.addresses =
            super::deploy::deploy(&deployer, owner, minter, &options.keeper_contracts).await?;
        let token = OceanToken::new(chain.addresses.get("OceanToken")?, &deployer);
        for account in &chain.accounts[1..] {
            send_tx!(
                token.mint(account.address, U256::from(FUNDING)),
                format!("funding {}", account.address)
            );
        }
        artifacts::write(
            &options.artifacts_dir,
            "development",
            &options.keeper_contracts,
            &chain.addresses,
        )?;
        Ok(chain)
    }
}

fn check_exists(path: &Path, what: &str) -> Result<(), ChainError> {
    if path.exists() {
        Ok(())
    } else {
        Err(ChainError::Config(format!(
            "{what} not found at {}; `scripts/chain-deps.sh` installs it (or set BRIZO_TOOLS_DIR)",
            path.display()
        )))
    }
}
