//! The consumer's side, as a Squid client does it: order a dataset's compute service (create
//! the agreement, lock the price), start a job over the v1 API with signed requests, follow
//! it, fetch results. Used by `brizo consumer compute`, the demo and the tests.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::DynProvider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail};
use serde_json::Value;

use crate::assets::{ddo, did};
use crate::chain::agreement::{self, Terms};
use crate::chain::artifacts::Addresses;
use crate::chain::contracts::DIDRegistry;

pub struct Consumer {
    pub http: reqwest::Client,
    pub service: String,
    pub signer: PrivateKeySigner,
    pub chain: DynProvider,
    pub addresses: Addresses,
}

/// Which algorithm to run.
pub enum Algorithm {
    Did(String),
    /// `algorithmMeta`: `{"rawcode", "container": {"image", "tag", "entrypoint"}}`.
    Meta(Value),
}

impl Consumer {
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    pub fn sign(&self, message: &str) -> String {
        self.signer
            .sign_message_sync(message.as_bytes())
            .expect("local signing")
            .to_string()
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.service))?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status}: {}",
                body["error"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(body)
    }

    /// Orders compute on `dataset`: a new agreement at the DDO's price, naming the service's
    /// provider, with the price locked. `compute_timeout` is in blocks (0: none).
    pub async fn order(&self, dataset: &str, compute_timeout: u64) -> anyhow::Result<Terms> {
        let id = did::parse(dataset).with_context(|| format!("{dataset} is not a did:op DID"))?;
        let ddo_doc = self
            .json(self.http.get(format!(
                "{}/api/v1/aquarius/assets/ddo/{}",
                self.service,
                did::format(&id)
            )))
            .await?;
        let policy = ddo::compute_policy(&ddo_doc)?;
        let info = self
            .json(self.http.get(format!("{}/api/v1/brizo", self.service)))
            .await?;
        let provider: Address = info["provider-address"]
            .as_str()
            .context("the service has no provider address")?
            .parse()?;
        let publisher = DIDRegistry::new(self.addresses.get("DIDRegistry")?, &self.chain)
            .getDIDOwner(id)
            .call()
            .await?;
        let terms = Terms {
            agreement_id: B256::from(rand::random::<[u8; 32]>()),
            did: id,
            price: policy.price,
            publisher,
            consumer: self.address(),
        };
        agreement::create(
            &self.chain,
            &self.addresses,
            &terms,
            provider,
            [0, compute_timeout, 0],
        )
        .await?;
        agreement::lock_reward(&self.chain, &self.addresses, &terms).await?;
        Ok(terms)
    }

    /// `POST services/compute`, signed over `consumerAddress + serviceAgreementId`.
    pub async fn start(&self, agreement_id: B256, algorithm: &Algorithm) -> anyhow::Result<String> {
        self.start_with(
            agreement_id,
            algorithm,
            serde_json::json!({"publishOutput": 0, "publishAlgorithmLog": 1}),
        )
        .await
    }

    /// `start` with an `output` section (publishOutput, publishAlgorithmLog, whitelist).
    pub async fn start_with(
        &self,
        agreement_id: B256,
        algorithm: &Algorithm,
        output: Value,
    ) -> anyhow::Result<String> {
        let consumer = self.address().to_string();
        let agreement = agreement_id.to_string();
        let mut body = serde_json::json!({"consumerAddress": consumer, "serviceAgreementId": agreement,
            "signature": self.sign(&format!("{consumer}{agreement}")), "output": output});
        match algorithm {
            Algorithm::Did(d) => body["algorithmDID"] = Value::String(d.clone()),
            Algorithm::Meta(m) => body["algorithmMeta"] = m.clone(),
        }
        let res = self
            .json(
                self.http
                    .post(format!("{}/api/v1/brizo/services/compute", self.service))
                    .json(&body),
            )
            .await?;
        Ok(res["jobId"]
            .as_str()
            .context("no jobId in the answer")?
            .to_string())
    }

    /// The signed query of a job's (or an agreement's) status, stop and removal, as squid-py
    /// sends it: the signature covers consumer, job id and agreement id, concatenated.
    pub fn query(&self, agreement_id: B256, job_id: Option<&str>) -> Vec<(String, String)> {
        let consumer = self.address().to_string();
        let agreement = agreement_id.to_string();
        let job = job_id.unwrap_or("");
        vec![
            ("consumerAddress".into(), consumer.clone()),
            ("serviceAgreementId".into(), agreement.clone()),
            ("jobId".into(), job.into()),
            (
                "signature".into(),
                self.sign(&format!("{consumer}{job}{agreement}")),
            ),
        ]
    }

    /// Status objects (`GET`), or after `PUT` (stop) / `DELETE` (remove).
    pub async fn call(
        &self,
        method: reqwest::Method,
        agreement_id: B256,
        job_id: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let url = format!("{}/api/v1/brizo/services/compute", self.service);
        let res = self
            .json(
                self.http
                    .request(method, url)
                    .query(&self.query(agreement_id, job_id)),
            )
            .await?;
        Ok(res.as_array().cloned().unwrap_or_default())
    }

    /// Downloads a results or log URL from a status object, signed for this job.
    pub async fn download(&self, url: &str, job_id: &str) -> anyhow::Result<bytes::Bytes> {
        let consumer = self.address().to_string();
        let signature = self.sign(&format!("{consumer}{job_id}"));
        let res = self
            .http
            .get(url)
            .query(&[("consumerAddress", &consumer), ("signature", &signature)])
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("{url}: {}", res.status());
        }
        Ok(res.bytes().await?)
    }

    pub async fn balance(&self, who: Address) -> anyhow::Result<U256> {
        Ok(agreement::token_balance(&self.chain, &self.addresses, who).await?)
    }
}
