//! A world for the v1 API's tests: a real local chain with the keeper contracts 0.13.2
//! (anvil), the real service on it with the provider's key, and helpers to publish datasets
//! and algorithms and follow a consumer's job to its settlement.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use brizo::assets::publish::{self, AlgorithmTerms, Asset, DatasetTerms};
use brizo::chain::agreement::Terms;
use brizo::chain::dev::{DEV_KEYS, DevChain, DevOptions};
use brizo::chain::signing_provider;
use brizo::squid::Consumer;
use reqwest::Method;
use serde_json::Value;

use super::{IMAGE, Service};

pub const PATIENCE: Duration = Duration::from_secs(120);

pub struct World {
    pub chain: DevChain,
    pub dir: tempfile::TempDir,
    pub svc: Service,
}

pub async fn world() -> World {
    world_with(&[]).await
}

pub async fn world_with(extra: &[(&str, &str)]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let chain = DevChain::start(&DevOptions::new(
        super::free_port(),
        dir.path().join("artifacts"),
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}\n(install the chain tools with scripts/chain-deps.sh)"));
    let artifacts = dir.path().join("artifacts");
    let mut env = vec![
        ("BRIZO_CHAIN__KEEPER_URL", chain.url.as_str()),
        ("BRIZO_CHAIN__ARTIFACTS_DIR", artifacts.to_str().unwrap()),
        ("BRIZO_PROVIDER_KEY", DEV_KEYS[2]),
    ];
    env.extend_from_slice(extra);
    let svc = Service::start_with(&env).await;
    World { chain, dir, svc }
}

impl World {
    pub fn publisher(&self) -> PrivateKeySigner {
        DEV_KEYS[2].parse().unwrap()
    }

    pub fn consumer(&self, index: usize) -> Consumer {
        let (chain, _) = signing_provider(&self.chain.url, DEV_KEYS[index]).unwrap();
        Consumer {
            http: reqwest::Client::new(),
            service: self.svc.base.clone(),
            signer: DEV_KEYS[index].parse().unwrap(),
            chain,
            addresses: self.chain.addresses.clone(),
        }
    }

    pub async fn publish(&self, asset: Asset) -> String {
        let (chain, _) = signing_provider(&self.chain.url, DEV_KEYS[2]).unwrap();
        publish::publish(
            &self.svc.base,
            &chain,
            &self.chain.addresses,
            &self.publisher(),
            &asset,
        )
        .await
        .unwrap()
    }

    /// A dataset of three numbers, and optionally its policy changed by `tweak`.
    pub async fn dataset(&self, tweak: impl FnOnce(&mut DatasetTerms)) -> String {
        let url = self.svc.dataset("numbers/values.txt", "3\n4\n5\n");
        let (image, tag) = IMAGE.split_once(':').unwrap();
        let mut terms = DatasetTerms {
            name: "numbers".into(),
            files: vec![url],
            price: U256::from(7u64) * U256::from(10u64).pow(U256::from(18u64)),
            timeout_secs: 120,
            allow_raw_algorithm: false,
            trusted_algorithms: vec![],
            allow_network_access: false,
            requires_approval: false,
            review_outputs: false,
            encrypt_results: false,
            sample: vec![],
            containers: vec![(image.into(), tag.into())],
        };
        tweak(&mut terms);
        self.publish(Asset::Dataset(terms)).await
    }

    pub async fn algorithm(&self) -> String {
        let url = self.svc.dataset(
            "algorithms/sum.py",
            "import os, pathlib\nfiles = [p for p in pathlib.Path('/data/inputs').rglob('*') if p.is_file()]\n\
             total = sum(int(x) for p in files for x in p.read_text().split())\nprint('sum', total, 'of', len(files), 'file(s)', flush=True)\n\
             pathlib.Path('/data/outputs/sum.txt').write_text(str(total))\n",
        );
        let (image, tag) = IMAGE.split_once(':').unwrap();
        self.publish(Asset::Algorithm(AlgorithmTerms {
            name: "sum".into(),
            file: url,
            image: image.into(),
            tag: tag.into(),
            entrypoint: "python3 $ALGO".into(),
        }))
        .await
    }

    pub async fn wait_finished(&self, consumer: &Consumer, terms: &Terms, job: &str) -> Value {
        settled(&self.svc, consumer, terms, job).await
    }
}

/// The v1 status of `job`, as its consumer polls it, once it ended and its agreement is
/// settled; `svc`'s log is shown if it never is.
pub async fn settled(svc: &Service, consumer: &Consumer, terms: &Terms, job: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let list = consumer
            .call(Method::GET, terms.agreement_id, Some(job))
            .await
            .unwrap();
        let status = &list[0];
        if status["status"] == 70 && !status["settlement"].is_null()
            || matches!(status["status"].as_i64(), Some(31 | 32)) && !status["settlement"].is_null()
        {
            return status.clone();
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not finish and settle: {status}\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
