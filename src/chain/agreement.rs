//! Compute agreements on the keeper contracts: the consumer's side (create, lock the price),
//! used by the demo and the tests, and the provider's checks before anything runs.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};

use super::artifacts::Addresses;
use super::contracts::*;
use super::deploy::compute_template_id;
use super::{ChainError, call_error};
use crate::send_tx;

/// The three conditions of an EscrowComputeExecutionTemplate agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConditionIds {
    pub lock: B256,
    pub compute: B256,
    pub escrow: B256,
}

/// What identifies an agreement's terms: the conditions' ids are hashes of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub agreement_id: B256,
    pub did: B256,
    pub price: U256,
    /// Receives the price when the job is done.
    pub publisher: Address,
    pub consumer: Address,
}

/// The condition ids these terms produce, computed by the contracts themselves.
pub async fn condition_ids(
    p: &DynProvider,
    a: &Addresses,
    t: &Terms,
) -> Result<ConditionIds, ChainError> {
    let lock_c = LockRewardCondition::new(a.get("LockRewardCondition")?, p);
    let compute_c = ComputeExecutionCondition::new(a.get("ComputeExecutionCondition")?, p);
    let escrow_c = EscrowReward::new(a.get("EscrowReward")?, p);
    let escrow_address = a.get("EscrowReward")?;
    let err = |e| call_error("computing condition ids", e);
    let lock_hash = lock_c
        .hashValues(escrow_address, t.price)
        .call()
        .await
        .map_err(err)?;
    let lock = lock_c
        .generateId(t.agreement_id, lock_hash)
        .call()
        .await
        .map_err(err)?;
    let compute_hash = compute_c
        .hashValues(t.did, t.consumer)
        .call()
        .await
        .map_err(err)?;
    let compute = compute_c
        .generateId(t.agreement_id, compute_hash)
        .call()
        .await
        .map_err(err)?;
    let escrow_hash = escrow_c
        .hashValues(t.price, t.publisher, t.consumer, lock, compute)
        .call()
        .await
        .map_err(err)?;
    let escrow = escrow_c
        .generateId(t.agreement_id, escrow_hash)
        .call()
        .await
        .map_err(err)?;
    Ok(ConditionIds {
        lock,
        compute,
        escrow,
    })
}

/// Consumer side: creates the agreement (`timeouts` in blocks, 0 for none) naming `provider`.
pub async fn create(
    p: &DynProvider,
    a: &Addresses,
    t: &Terms,
    provider: Address,
    timeouts: [u64; 3],
) -> Result<ConditionIds, ChainError> {
    let ids = condition_ids(p, a, t).await?;
    let agreements = AgreementStoreManager::new(a.get("AgreementStoreManager")?, p);
    send_tx!(
        agreements.createAgreement(
            t.agreement_id,
            t.did,
            compute_template_id(),
            vec![ids.lock, ids.compute, ids.escrow],
            vec![U256::ZERO; 3],
            timeouts.iter().map(|b| U256::from(*b)).collect(),
            vec![provider, t.consumer],
        ),
        "creating the agreement"
    );
    Ok(ids)
}

/// Consumer side: approves and locks the price in escrow.
pub async fn lock_reward(p: &DynProvider, a: &Addresses, t: &Terms) -> Result<(), ChainError> {
    let lock = a.get("LockRewardCondition")?;
    send_tx!(
        OceanToken::new(a.get("OceanToken")?, p).approve(lock, t.price),
        "approving the price"
    );
    send_tx!(
        LockRewardCondition::new(lock, p).fulfill(t.agreement_id, a.get("EscrowReward")?, t.price),
        "locking the reward"
    );
    Ok(())
}

/// An agreement as the chain has it.
#[derive(Debug, Clone)]
pub struct OnChainAgreement {
    pub did: B256,
    pub did_owner: Address,
    pub template_id: B256,
    pub condition_ids: Vec<B256>,
}

pub async fn get(
    p: &DynProvider,
    a: &Addresses,
    agreement_id: B256,
) -> Result<Option<OnChainAgreement>, ChainError> {
    let r = AgreementStoreManager::new(a.get("AgreementStoreManager")?, p)
        .getAgreement(agreement_id)
        .call()
        .await
        .map_err(|e| call_error("reading the agreement", e))?;
    if r.did == B256::ZERO && r.conditionIds.is_empty() {
        return Ok(None);
    }
    Ok(Some(OnChainAgreement {
        did: r.did,
        did_owner: r.didOwner,
        template_id: r.templateId,
        condition_ids: r.conditionIds,
    }))
}

#[derive(Debug, Clone, Copy)]
pub struct ConditionInfo {
    pub state: ConditionState,
    /// Blocks after creation when it can be aborted; 0: never.
    pub time_out: u64,
    pub created_at_block: u64,
}

pub async fn condition(
    p: &DynProvider,
    a: &Addresses,
    id: B256,
) -> Result<ConditionInfo, ChainError> {
    let r = ConditionStoreManager::new(a.get("ConditionStoreManager")?, p)
        .getCondition(id)
        .call()
        .await
        .map_err(|e| call_error("reading a condition", e))?;
    Ok(ConditionInfo {
        state: ConditionState::from_u8(r.state),
        time_out: r.timeOut.to::<u64>(),
        created_at_block: r.blockNumber.to::<u64>(),
    })
}

/// Why the provider refuses to run anything for an agreement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown agreement {0}")]
    UnknownAgreement(B256),
    #[error("agreement {0} does not use the compute template")]
    WrongTemplate(B256),
    #[error("agreement is for another dataset")]
    OtherDataset,
    #[error(
        "the signer is not the consumer of this agreement (or the price differs from the asset's)"
    )]
    NotTheConsumer,
    #[error("the price is not locked: the lock condition is {0:?}; lock the reward first")]
    NotPaid(ConditionState),
    #[error("the agreement has expired")]
    Expired,
    #[error("the agreement is already settled; order again to run another job")]
    AlreadySettled,
}

/// Provider side: checks that `consumer` may run compute under `terms`' agreement: it exists,
/// uses the compute template and names this dataset; its conditions are exactly the ones these
/// terms produce (so the signer is its consumer and the price is the asset's); the price is
/// locked (state 2: fulfilling compute proves no payment); nothing has timed out.
pub async fn check(
    p: &DynProvider,
    a: &Addresses,
    t: &Terms,
) -> Result<Result<ConditionIds, Refusal>, ChainError> {
    let Some(agreement) = get(p, a, t.agreement_id).await? else {
        return Ok(Err(Refusal::UnknownAgreement(t.agreement_id)));
    };
    if agreement.template_id != compute_template_id() {
        return Ok(Err(Refusal::WrongTemplate(t.agreement_id)));
    }
    if agreement.did != t.did {
        return Ok(Err(Refusal::OtherDataset));
    }
    let ids = condition_ids(p, a, t).await?;
    if agreement.condition_ids != [ids.lock, ids.compute, ids.escrow] {
        return Ok(Err(Refusal::NotTheConsumer));
    }
    let block = p
        .get_block_number()
        .await
        .map_err(|e| call_error("reading the block number", e))?;
    let lock = condition(p, a, ids.lock).await?;
    match lock.state {
        ConditionState::Fulfilled => {}
        ConditionState::Aborted => return Ok(Err(Refusal::Expired)),
        other => return Ok(Err(Refusal::NotPaid(other))),
    }
    if condition(p, a, ids.escrow).await?.state != ConditionState::Unfulfilled {
        return Ok(Err(Refusal::AlreadySettled));
    }
    let compute = condition(p, a, ids.compute).await?;
    let timed_out = compute.time_out > 0 && block > compute.created_at_block + compute.time_out;
    if compute.state == ConditionState::Aborted || timed_out {
        return Ok(Err(Refusal::Expired));
    }
    Ok(Ok(ids))
}

/// Provider side, idempotent: fulfils ComputeExecutionCondition unless it already is.
pub async fn fulfill_compute(
    p: &DynProvider,
    a: &Addresses,
    t: &Terms,
    ids: &ConditionIds,
) -> Result<Option<B256>, ChainError> {
    if condition(p, a, ids.compute).await?.state == ConditionState::Fulfilled {
        return Ok(None);
    }
    let c = ComputeExecutionCondition::new(a.get("ComputeExecutionCondition")?, p);
    let receipt = send_tx!(
        c.fulfill(t.agreement_id, t.did, t.consumer),
        "fulfilling the compute condition"
    );
    Ok(Some(receipt.transaction_hash))
}

/// Provider side, idempotent: releases the escrow to the publisher unless already done.
pub async fn release_reward(
    p: &DynProvider,
    a: &Addresses,
    t: &Terms,
    ids: &ConditionIds,
) -> Result<Option<B256>, ChainError> {
    if condition(p, a, ids.escrow).await?.state == ConditionState::Fulfilled {
        return Ok(None);
    }
    let e = EscrowReward::new(a.get("EscrowReward")?, p);
    let receipt = send_tx!(
        e.fulfill(
            t.agreement_id,
            t.price,
            t.publisher,
            t.consumer,
            ids.lock,
            ids.compute
        ),
        "releasing the reward"
    );
    Ok(Some(receipt.transaction_hash))
}

/// Publisher side: registers a DID with its checksum, providers and DDO URL.
pub async fn register_did(
    p: &DynProvider,
    a: &Addresses,
    did: B256,
    checksum: B256,
    providers: Vec<Address>,
    url: &str,
) -> Result<B256, ChainError> {
    let registry = DIDRegistry::new(a.get("DIDRegistry")?, p);
    let receipt = send_tx!(
        registry.registerAttribute(did, checksum, providers, url.to_string()),
        "registering the DID"
    );
    Ok(receipt.transaction_hash)
}

pub async fn token_balance(
    p: &DynProvider,
    a: &Addresses,
    who: Address,
) -> Result<U256, ChainError> {
    OceanToken::new(a.get("OceanToken")?, p)
        .balanceOf(who)
        .call()
        .await
        .map_err(|e| call_error("reading a balance", e))
}
