//! Deploys and sets up the keeper contracts from the real artifacts, as Ocean's own
//! migration scripts did: libraries linked, every contract initialized, the compute template
//! proposed and approved.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;

use super::artifacts::{Addresses, linked_bytecode};
use super::contracts::*;
use super::{ChainError, RECEIPT_TIMEOUT, call_error};
use crate::send_tx;

/// `keccak256("EscrowComputeExecutionTemplate")`, the compute template's id.
pub fn compute_template_id() -> B256 {
    keccak256("EscrowComputeExecutionTemplate")
}

async fn deploy_code(
    provider: &DynProvider,
    name: &str,
    code: alloy::primitives::Bytes,
) -> Result<Address, ChainError> {
    let tx = TransactionRequest::default().with_deploy_code(code);
    let what = format!("deploying {name}");
    let pending = provider
        .send_transaction(tx)
        .await
        .map_err(|e| call_error(&what, e))?;
    let receipt = pending
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(|e| call_error(&what, e))?;
    if !receipt.status() {
        return Err(ChainError::Transaction {
            what,
            message: "reverted".into(),
        });
    }
    receipt
        .contract_address
        .ok_or_else(|| ChainError::Transaction {
            what,
            message: "no contract address in the receipt".into(),
        })
}

/// Deploys everything with `provider`'s signer as the owner. `initial_minter` must differ
/// from the owner (OceanToken requires it). `source` holds the npm package's artifacts.
pub async fn deploy(
    provider: &DynProvider,
    owner: Address,
    initial_minter: Address,
    source: &Path,
) -> Result<Addresses, ChainError> {
    let a = deploy_code_of_all(provider, source).await?;
    let c = Deployed::of(&a)?;
    initialize(provider, &c, owner, initial_minter).await?;
    register_compute_template(provider, &c).await?;
    Ok(a)
}

/// The addresses the set-up steps wire together, read once from the deployment.
struct Deployed {
    token: Address,
    dispenser: Address,
    did_registry: Address,
    conditions: Address,
    templates: Address,
    agreements: Address,
    lock: Address,
    escrow: Address,
    compute: Address,
}

impl Deployed {
    fn of(a: &Addresses) -> Result<Self, ChainError> {
        Ok(Self {
            token: a.get("OceanToken")?,
            dispenser: a.get("Dispenser")?,
            did_registry: a.get("DIDRegistry")?,
            conditions: a.get("ConditionStoreManager")?,
            templates: a.get("TemplateStoreManager")?,
            agreements: a.get("AgreementStoreManager")?,
            lock: a.get("LockRewardCondition")?,
            escrow: a.get("EscrowReward")?,
            compute: a.get("ComputeExecutionCondition")?,
        })
    }
}

/// The libraries, then the contracts linked to them; their addresses.
async fn deploy_code_of_all(
    provider: &DynProvider,
    source: &Path,
) -> Result<Addresses, ChainError> {
    let mut libraries = BTreeMap::new();
    for library in LIBRARIES {
        let code = linked_bytecode(source, library, &BTreeMap::new())?;
        libraries.insert(
            library.to_string(),
            deploy_code(provider, library, code).await?,
        );
    }
    let mut map = BTreeMap::new();
    for contract in CONTRACTS {
        let code = linked_bytecode(source, contract, &libraries)?;
        map.insert(
            contract.to_string(),
            deploy_code(provider, contract, code).await?,
        );
    }
    Ok(Addresses(map))
}

/// Each contract's `initialize`, wiring it to the others, with `owner` as their owner.
async fn initialize(
    provider: &DynProvider,
    c: &Deployed,
    owner: Address,
    initial_minter: Address,
) -> Result<(), ChainError> {
    let Deployed {
        token,
        dispenser,
        did_registry,
        conditions,
        templates,
        agreements,
        lock,
        escrow,
        compute,
    } = *c;
    let p = provider.clone();
    send_tx!(
        OceanToken::new(token, &p).initialize(owner, initial_minter),
        "OceanToken.initialize"
    );
    send_tx!(
        Dispenser::new(dispenser, &p).initialize(token, owner),
        "Dispenser.initialize"
    );
    send_tx!(
        DIDRegistry::new(did_registry, &p).initialize(owner),
        "DIDRegistry.initialize"
    );
    send_tx!(
        ConditionStoreManager::new(conditions, &p).initialize(owner),
        "ConditionStoreManager.initialize"
    );
    send_tx!(
        TemplateStoreManager::new(templates, &p).initialize(owner),
        "TemplateStoreManager.initialize"
    );
    send_tx!(
        AgreementStoreManager::new(agreements, &p).initialize(
            owner,
            conditions,
            templates,
            did_registry
        ),
        "AgreementStoreManager.initialize"
    );
    send_tx!(
        LockRewardCondition::new(lock, &p).initialize(owner, conditions, token),
        "LockRewardCondition.initialize"
    );
    send_tx!(
        EscrowReward::new(escrow, &p).initialize(owner, conditions, token),
        "EscrowReward.initialize"
    );
    send_tx!(
        ComputeExecutionCondition::new(compute, &p).initialize(owner, conditions, agreements),
        "ComputeExecutionCondition.initialize"
    );
    Ok(())
}

/// The compute template (lock reward, compute execution, escrow) proposed and approved, its
/// actor types registered; the agreement store may create conditions, the dispenser mint.
async fn register_compute_template(provider: &DynProvider, c: &Deployed) -> Result<(), ChainError> {
    let Deployed {
        token,
        dispenser,
        conditions,
        templates,
        agreements,
        lock,
        escrow,
        compute,
        ..
    } = *c;
    let p = provider.clone();
    let template_store = TemplateStoreManager::new(templates, &p);
    for actor in ["provider", "consumer"] {
        send_tx!(
            template_store.registerTemplateActorType(actor.to_string()),
            format!("registering actor type {actor}")
        );
    }
    let provider_type = template_store
        .getTemplateActorTypeId("provider".into())
        .call()
        .await
        .map_err(|e| call_error("actor type", e))?;
    let consumer_type = template_store
        .getTemplateActorTypeId("consumer".into())
        .call()
        .await
        .map_err(|e| call_error("actor type", e))?;
    let id = compute_template_id();
    send_tx!(
        template_store.proposeTemplate(
            id,
            vec![lock, compute, escrow],
            vec![provider_type, consumer_type],
            "EscrowComputeExecutionTemplate".into()
        ),
        "proposing the compute template"
    );
    send_tx!(
        template_store.approveTemplate(id),
        "approving the compute template"
    );
    send_tx!(
        ConditionStoreManager::new(conditions, &p).delegateCreateRole(agreements),
        "delegating the create role"
    );
    send_tx!(
        OceanToken::new(token, &p).addMinter(dispenser),
        "making the dispenser a minter"
    );
    Ok(())
}
