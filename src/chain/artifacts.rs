//! Ocean-style artifacts: a folder of `<Contract>.<network>.json`, each with `address` and
//! `abi` (the npm package adds `bytecode`). Squid clients and the keeper tooling find a
//! deployment this way; brizo reads and writes the same format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, Bytes};
use serde::{Deserialize, Serialize};

use super::ChainError;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Artifact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: Address,
    pub abi: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytecode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

pub fn artifact_path(dir: &Path, contract: &str, network: &str) -> PathBuf {
    dir.join(format!("{contract}.{network}.json"))
}

pub fn read(dir: &Path, contract: &str, network: &str) -> Result<Artifact, ChainError> {
    let path = artifact_path(dir, contract, network);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ChainError::Config(format!(
            "artifact {}: {e}; is --artifacts-dir right?",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| ChainError::Config(format!("artifact {}: {e}", path.display())))
}

/// The creation bytecode of `contract`, with `libraries` (name → address) linked in where the
/// artifact has `__Name___...` placeholders.
pub fn linked_bytecode(
    dir: &Path,
    contract: &str,
    libraries: &BTreeMap<String, Address>,
) -> Result<Bytes, ChainError> {
    let artifact = read(dir, contract, "development")?;
    let mut code = artifact
        .bytecode
        .ok_or_else(|| ChainError::Config(format!("{contract}.development.json has no bytecode")))?
        .trim_start_matches("0x")
        .to_string();
    for (name, address) in libraries {
        // Solidity placeholders are 40 characters: `__Name` padded with underscores.
        let placeholder = format!("__{name}{}", "_".repeat(38usize.saturating_sub(name.len())));
        code = code.replace(&placeholder, &hex::encode(address.as_slice()));
    }
    if let Some(pos) = code.find("__") {
        return Err(ChainError::Config(format!(
            "{contract}: unlinked library placeholder {}",
            &code[pos..pos + 40.min(code.len() - pos)]
        )));
    }
    hex::decode(&code)
        .map(Bytes::from)
        .map_err(|e| ChainError::Config(format!("{contract} bytecode: {e}")))
}

/// Where a deployment's contracts are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses(pub BTreeMap<String, Address>);

impl Addresses {
    pub fn get(&self, contract: &str) -> Result<Address, ChainError> {
        self.0
            .get(contract)
            .copied()
            .ok_or_else(|| ChainError::Config(format!("no address for {contract}")))
    }

    /// Reads the addresses of every contract brizo uses from an artifacts folder.
    pub fn load(dir: &Path, network: &str) -> Result<Addresses, ChainError> {
        let mut map = BTreeMap::new();
        for contract in super::contracts::CONTRACTS {
            map.insert(contract.to_string(), read(dir, contract, network)?.address);
        }
        Ok(Addresses(map))
    }
}

impl Addresses {
    /// From `chain.artifacts_dir`, or else from explicit `chain.contracts` addresses.
    pub fn from_config(chain: &crate::config::ChainConfig) -> Result<Addresses, ChainError> {
        if !chain.artifacts_dir.as_os_str().is_empty() {
            return Addresses::load(&chain.artifacts_dir, &chain.network);
        }
        if chain.contracts.is_empty() {
            return Err(ChainError::Config("chain.keeper_url is set but neither chain.artifacts_dir (--artifacts-dir) nor chain.contracts is".into()));
        }
        let mut map = BTreeMap::new();
        for contract in super::contracts::CONTRACTS {
            let text = chain.contracts.get(contract).ok_or_else(|| {
                ChainError::Config(format!("chain.contracts has no address for {contract}"))
            })?;
            let address = text.parse().map_err(|_| {
                ChainError::Config(format!(
                    "chain.contracts.{contract}: {text:?} is not an address"
                ))
            })?;
            map.insert(contract.to_string(), address);
        }
        Ok(Addresses(map))
    }
}

/// Writes `<Contract>.<network>.json` (name, address, abi) for each deployed contract.
pub fn write(
    out: &Path,
    network: &str,
    source: &Path,
    addresses: &Addresses,
) -> Result<(), ChainError> {
    std::fs::create_dir_all(out)
        .map_err(|e| ChainError::Config(format!("{}: {e}", out.display())))?;
    for (contract, address) in &addresses.0 {
        let mut artifact = read(source, contract, "development")?;
        artifact.address = *address;
        artifact.bytecode = None;
        artifact.name = Some(contract.clone());
        let path = artifact_path(out, contract, network);
        let text = serde_json::to_string_pretty(&artifact).expect("artifact serializes");
        std::fs::write(&path, text)
            .map_err(|e| ChainError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
