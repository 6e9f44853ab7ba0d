//! The keeper contracts 0.13.2 on a real local chain (anvil): deployment from the real
//! artifacts, compute agreements, the provider's checks and settlement.
//! Needs anvil and the artifacts: `scripts/chain-deps.sh` (`make test` runs it).

mod common;

use std::time::Duration;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use brizo::chain::agreement::{self, ConditionIds, Refusal, Terms};
use brizo::chain::artifacts::Addresses;
use brizo::chain::contracts::ConditionState;
use brizo::chain::dev::{DEV_KEYS, DevChain, DevOptions};
use brizo::chain::signing_provider;

async fn chain() -> (DevChain, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = DevOptions::new(common::free_port(), dir.path().join("artifacts"));
    let chain = DevChain::start(&options)
        .await
        .unwrap_or_else(|e| panic!("{e}\n(install the chain tools with scripts/chain-deps.sh)"));
    (chain, dir)
}

fn as_role(chain: &DevChain, index: usize) -> (DynProvider, Address) {
    signing_provider(&chain.url, DEV_KEYS[index]).unwrap()
}

/// The publisher registers a dataset DID; returns it.
async fn publish(chain: &DevChain) -> B256 {
    let (publisher, publisher_address) = as_role(chain, 2);
    let did = keccak256(format!("dataset-{}", rand_suffix()));
    agreement::register_did(
        &publisher,
        &chain.addresses,
        did,
        keccak256("ddo"),
        vec![publisher_address],
        "http://127.0.0.1/ddo",
    )
    .await
    .unwrap();
    did
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn terms(chain: &DevChain, did: B256, consumer: usize) -> Terms {
    Terms {
        agreement_id: keccak256(format!("agreement-{}", rand_suffix())),
        did,
        price: U256::from(10u64) * U256::from(10u64).pow(U256::from(18u64)),
        publisher: chain.accounts[2].address,
        consumer: chain.accounts[consumer].address,
    }
}

#[tokio::test]
async fn deployment_writes_ocean_style_artifacts() {
    let (chain, dir) = chain().await;
    for contract in brizo::chain::contracts::CONTRACTS {
        let path = dir
            .path()
            .join("artifacts")
            .join(format!("{contract}.development.json"));
        let artifact: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let address: Address = artifact["address"].as_str().unwrap().parse().unwrap();
        assert_eq!(address, chain.addresses.get(contract).unwrap());
        assert!(
            artifact["abi"].as_array().unwrap().len() > 3,
            "{contract} abi"
        );
        let provider = brizo::chain::provider(&chain.url).unwrap();
        assert!(
            !provider.get_code_at(address).await.unwrap().is_empty(),
            "{contract} has no code"
        );
    }
    // The addresses read back from the artifacts are the deployment's.
    let loaded =
        brizo::chain::artifacts::Addresses::load(&dir.path().join("artifacts"), "development")
            .unwrap();
    assert_eq!(loaded, chain.addresses);
    // Test accounts are funded.
    let provider = brizo::chain::provider(&chain.url).unwrap();
    let balance = agreement::token_balance(&provider, &chain.addresses, chain.accounts[3].address)
        .await
        .unwrap();
    assert_eq!(balance, U256::from(brizo::chain::dev::FUNDING));
}

#[tokio::test]
async fn a_compute_agreement_is_checked_and_settled() {
    let (chain, _dir) = chain().await;
    let a = &chain.addresses;
    let did = publish(&chain).await;
    let (consumer, _) = as_role(&chain, 3);
    let (provider, provider_address) = as_role(&chain, 2);
    let t = terms(&chain, did, 3);

    assert_eq!(
        agreement::check(&provider, a, &t).await.unwrap(),
        Err(Refusal::UnknownAgreement(t.agreement_id))
    );
    let ids = agreement::create(&consumer, a, &t, provider_address, [0, 0, 0])
        .await
        .unwrap();
    // Created but not paid: refused, even though fulfilling compute would succeed on chain.
    assert_eq!(
        agreement::check(&provider, a, &t).await.unwrap(),
        Err(Refusal::NotPaid(ConditionState::Unfulfilled))
    );
    agreement::lock_reward(&consumer, a, &t).await.unwrap();
    assert_eq!(agreement::check(&provider, a, &t).await.unwrap(), Ok(ids));

    other_claims_are_refused(&provider, a, t, chain.accounts[4].address).await;
    settlement_is_idempotent_and_pays_the_publisher(&provider, a, &t, &ids).await;
}

/// Someone else claiming the agreement, another dataset, another price: refused.
async fn other_claims_are_refused(
    provider: &DynProvider,
    a: &Addresses,
    t: Terms,
    someone: Address,
) {
    let mut other = t;
    other.consumer = someone;
    assert_eq!(
        agreement::check(provider, a, &other).await.unwrap(),
        Err(Refusal::NotTheConsumer)
    );
    let mut other = t;
    other.did = keccak256("another dataset");
    assert_eq!(
        agreement::check(provider, a, &other).await.unwrap(),
        Err(Refusal::OtherDataset)
    );
    let mut other = t;
    other.price = U256::from(1u64);
    assert_eq!(
        agreement::check(provider, a, &other).await.unwrap(),
        Err(Refusal::NotTheConsumer)
    );
}

/// Settlement is idempotent: a second attempt sends nothing; the publisher is paid once.
async fn settlement_is_idempotent_and_pays_the_publisher(
    provider: &DynProvider,
    a: &Addresses,
    t: &Terms,
    ids: &ConditionIds,
) {
    assert!(
        agreement::fulfill_compute(provider, a, t, ids)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        agreement::fulfill_compute(provider, a, t, ids)
            .await
            .unwrap()
            .is_none()
    );
    let before = agreement::token_balance(provider, a, t.publisher)
        .await
        .unwrap();
    assert!(
        agreement::release_reward(provider, a, t, ids)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        agreement::release_reward(provider, a, t, ids)
            .await
            .unwrap()
            .is_none()
    );
    let after = agreement::token_balance(provider, a, t.publisher)
        .await
        .unwrap();
    assert_eq!(after - before, t.price, "the publisher is paid the price");
    for id in [ids.lock, ids.compute, ids.escrow] {
        assert_eq!(
            agreement::condition(provider, a, id).await.unwrap().state,
            ConditionState::Fulfilled
        );
    }
}

#[tokio::test]
async fn an_agreement_past_its_timeout_is_refused() {
    let (chain, _dir) = chain().await;
    let a = &chain.addresses;
    let did = publish(&chain).await;
    let (consumer, _) = as_role(&chain, 3);
    let (provider, provider_address) = as_role(&chain, 2);
    let t = terms(&chain, did, 3);
    agreement::create(&consumer, a, &t, provider_address, [0, 2, 0])
        .await
        .unwrap();
    agreement::lock_reward(&consumer, a, &t).await.unwrap();
    // Time outs count blocks: mine past it.
    let _: serde_json::Value = provider
        .raw_request("anvil_mine".into(), (U256::from(5u64),))
        .await
        .unwrap();
    assert_eq!(
        agreement::check(&provider, a, &t).await.unwrap(),
        Err(Refusal::Expired)
    );
}

#[tokio::test]
async fn chain_dev_runs_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let summary = dir.path().join("summary.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brizo"))
        .args([
            "chain",
            "dev",
            "--port",
            &port.to_string(),
            "--artifacts-dir",
        ])
        .arg(dir.path().join("artifacts"))
        .arg("--summary")
        .arg(&summary)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !summary.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "brizo chain dev exited early"
        );
        assert!(std::time::Instant::now() < deadline, "no summary written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(doc["url"], format!("http://127.0.0.1:{port}"));
    assert_eq!(doc["accounts"].as_array().unwrap().len(), 6);
    assert!(
        dir.path()
            .join("artifacts/DIDRegistry.development.json")
            .exists()
    );
    // SIGTERM stops the command and the anvil it started.
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let provider = brizo::chain::provider(&format!("http://127.0.0.1:{port}")).unwrap();
    assert!(
        provider.get_chain_id().await.is_err(),
        "anvil still answers after chain dev stopped"
    );
}

#[tokio::test]
async fn a_deployment_can_be_named_by_addresses_instead_of_artifacts() {
    let (chain, dir) = chain().await;
    let mut config = brizo::config::Config::load(None, Default::default())
        .unwrap()
        .chain;
    config.keeper_url = chain.url.clone();
    assert!(
        brizo::chain::artifacts::Addresses::from_config(&config)
            .unwrap_err()
            .to_string()
            .contains("neither")
    );
    for (name, address) in &chain.addresses.0 {
        config.contracts.insert(name.clone(), address.to_string());
    }
    assert_eq!(
        brizo::chain::artifacts::Addresses::from_config(&config).unwrap(),
        chain.addresses
    );
    config.contracts.remove("EscrowReward");
    assert!(
        brizo::chain::artifacts::Addresses::from_config(&config)
            .unwrap_err()
            .to_string()
            .contains("EscrowReward")
    );
    config.artifacts_dir = dir.path().join("artifacts");
    assert_eq!(
        brizo::chain::artifacts::Addresses::from_config(&config).unwrap(),
        chain.addresses,
        "artifacts win when given"
    );
}
