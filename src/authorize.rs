//! The Authorizer: turns a signed Squid compute request into a job the engine can run, or a
//! refusal that says why. Everything is checked before anything runs: the signature, the
//! agreement on chain (consumer, dataset, template, price locked, not expired), the dataset's
//! owner (a publisher this service serves) and its policy (raw code, trusted algorithms,
//! containers, network).

use std::str::FromStr;
use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use serde::Deserialize;
use serde_json::Value;

use crate::assets::ddo::{self, ComputePolicy};
use crate::assets::metadata::{self, MetadataStore};
use crate::assets::resolver::Resolver;
use crate::assets::{AssetError, did};
use crate::chain::ChainError;
use crate::chain::agreement::{ConditionIds, Refusal, Terms};
use crate::chain::keeper::Keeper;
use crate::config::Config;
use crate::jobs::JobRequest;
use crate::jobs::model::{AgreementRecord, AlgorithmSource, InputSource};

/// Why a request was refused, or could not be checked. The API gives each its status.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The request itself is malformed or incomplete.
    #[error("{0}")]
    Invalid(String),
    /// The signature does not check out.
    #[error("{0}")]
    BadSignature(String),
    /// Well-formed and signed, but the agreement or the dataset's policy does not allow it.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    /// Something this check needs is not there (no chain configured); retrying can help.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Asset(#[from] AssetError),
}

/// What the chain side of the service needs; `keeper` and `resolver` are absent without a chain.
pub struct ChainContext {
    pub keeper: Option<Arc<Keeper>>,
    pub resolver: Option<Resolver>,
    pub metadata: MetadataStore,
    /// Dataset owners this service computes for.
    pub publishers: Vec<Address>,
}

impl ChainContext {
    pub fn new(
        config: &Config,
        keeper: Option<Arc<Keeper>>,
        metadata: MetadataStore,
    ) -> Result<Self, ChainError> {
        let mut publishers = config
            .chain
            .publishers
            .iter()
            .map(|p| {
                Address::from_str(p).map_err(|_| {
                    ChainError::Config(format!("chain.publishers: {p:?} is not an address"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if publishers.is_empty() {
            publishers.extend(keeper.as_ref().map(|k| k.address));
        }
        let resolver = keeper
            .clone()
            .map(|k| Resolver::new(config, k, metadata.clone()));
        Ok(Self {
            keeper,
            resolver,
            metadata,
            publishers,
        })
    }

    /// A DID both owned and registered by a served publisher (ownership alone can be handed
    /// over by anyone: a stranger's DDO transferred to the publisher is not the publisher's).
    pub fn served(&self, resolved: &crate::assets::resolver::Resolved) -> bool {
        self.publishers.contains(&resolved.owner) && self.publishers.contains(&resolved.registrant)
    }

    /// A DDO posted to the metadata store: its proof is checked, then the chain says whether
    /// its creator may write it ([`metadata::may_write`]). Without a chain nothing says whom a
    /// DID belongs to, and a signature alone would let anyone take any DID's place in the
    /// store first, so writes answer 503 like the rest of v1 (reads still work).
    pub async fn publish_ddo(&self, ddo: &Value) -> Result<String, AuthorizeError> {
        let (_, resolver) = self.chain()?;
        let (id, creator) = metadata::verify_proof(ddo)?;
        let registration = resolver.registration(id).await?.map(|(r, _url)| r);
        metadata::may_write(&did::format(&id), creator, registration, &self.publishers)?;
        let did = self.metadata.publish(ddo).await?;
        resolver.forget(&id);
        Ok(did)
    }

    /// A DDO from the metadata store, as it was published.
    pub async fn ddo(&self, did: &str) -> Result<Option<Value>, AuthorizeError> {
        Ok(self.metadata.get(did).await?)
    }

    pub fn chain(&self) -> Result<(&Arc<Keeper>, &Resolver), AuthorizeError> {
        match (&self.keeper, &self.resolver) {
            (Some(k), Some(r)) => Ok((k, r)),
            _ => Err(AuthorizeError::Unavailable("this service runs without a chain (chain.keeper_url / --keeper-url); the v1 API needs one".into())),
        }
    }
}

/// The body of `POST /api/v1/brizo/services/compute`, as Squid clients send it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    pub signature: Option<String>,
    pub service_agreement_id: Option<String>,
    pub consumer_address: Option<String>,
    #[serde(rename = "algorithmDID", alias = "algorithmDid")]
    pub algorithm_did: Option<String>,
    pub algorithm_meta: Option<Value>,
    pub output: Option<Value>,
    #[serde(rename = "jobId")]
    pub _job_id: Option<String>,
}

pub fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, AuthorizeError> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AuthorizeError::Invalid(format!("{name} is required")))
}

pub fn parse_address(text: &str) -> Result<Address, AuthorizeError> {
    Address::from_str(text.trim()).map_err(|_| {
        AuthorizeError::Invalid(format!(
            "consumerAddress {text:?} is not an Ethereum address"
        ))
    })
}

pub fn parse_agreement_id(text: &str) -> Result<B256, AuthorizeError> {
    did::parse_id(text).ok_or_else(|| {
        AuthorizeError::Invalid(format!(
            "serviceAgreementId {text:?} is not 32 bytes of hex"
        ))
    })
}

pub fn check_signature(
    consumer: Address,
    message: &str,
    signature: &str,
) -> Result<(), AuthorizeError> {
    crate::auth::signature::verify(
        consumer,
        message,
        signature,
        crate::jobs::model::now_epoch() as u64,
    )
    .map_err(|e| AuthorizeError::BadSignature(format!("invalid signature: {e}")))
}

fn refusal(r: Refusal) -> AuthorizeError {
    match r {
        Refusal::UnknownAgreement(_) => AuthorizeError::NotFound(r.to_string()),
        other => AuthorizeError::Refused(other.to_string()),
    }
}

/// A start request that passed every check: the job to run, the agreement it runs under, and
/// what fulfilling the compute condition needs.
pub struct Authorized {
    pub request: JobRequest,
    pub record: AgreementRecord,
    pub terms: Terms,
    pub ids: ConditionIds,
    /// The dataset asks for the publisher's approval of each job.
    pub requires_approval: bool,
    /// The dataset holds outputs until the publisher releases them.
    pub review_outputs: bool,
}

/// The key a job's results are encrypted to, if they are: the dataset may require it
/// (`encryptResults`), the consumer may ask for it (`output.encrypt`). The key is the one the
/// consumer gives (`output.publicKey`), else the one that signed the start request.
fn encryption_key(
    policy: &ComputePolicy,
    req: &StartRequest,
    signed: &str,
) -> Result<Option<String>, AuthorizeError> {
    let output = req.output.as_ref();
    let given = output
        .and_then(|o| o.get("publicKey"))
        .and_then(Value::as_str);
    let asked = output
        .and_then(|o| o.get("encrypt"))
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_i64() == Some(1));
    if !(policy.encrypt_results || asked || given.is_some()) {
        return Ok(None);
    }
    let key = match given {
        Some(text) => crate::seal::parse_public_key(text)
            .map_err(|e| AuthorizeError::Invalid(format!("output.publicKey: {e}")))?,
        None => crate::auth::signature::recover_public_key(
            signed,
            req.signature.as_deref().unwrap_or_default(),
        )
        .map_err(|e| AuthorizeError::BadSignature(e.to_string()))?,
    };
    Ok(Some(hex::encode(key)))
}

/// Checks a start request completely. Nothing is sent to the chain here: the caller fulfils
/// the compute condition once the job itself is known to be acceptable.
pub async fn authorize_start(
    ctx: &ChainContext,
    req: &StartRequest,
) -> Result<Authorized, AuthorizeError> {
    let (consumer, agreement_id, signed) = signed_start(req)?;
    let (keeper, resolver) = ctx.chain()?;
    let Some(on_chain) =
        crate::chain::agreement::get(&keeper.provider, &keeper.addresses, agreement_id).await?
    else {
        return Err(AuthorizeError::NotFound(format!(
            "unknown agreement {agreement_id}"
        )));
    };
    let dataset = resolver.resolve(&did::format(&on_chain.did)).await?;
    if !ctx.served(&dataset) {
        return Err(AuthorizeError::Refused(format!(
            "{} was not published by a publisher this service computes for",
            dataset.did
        )));
    }
    let policy = ddo::compute_policy(&dataset.ddo)?;
    let terms = Terms {
        agreement_id,
        did: on_chain.did,
        price: policy.price,
        publisher: dataset.owner,
        consumer,
    };
    let ids = keeper.check(&terms).await?.map_err(refusal)?;

    let (algorithm, container) = algorithm_of(ctx, resolver, &policy, req).await?;
    let image = format!("{}:{}", container.image, container.tag);
    if !policy.supported_containers.is_empty() && !policy.supported_containers.contains(&image) {
        return Err(AuthorizeError::Refused(format!(
            "image {image} is not one the dataset supports ({})",
            policy.supported_containers.join(", ")
        )));
    }
    let inputs = dataset_inputs(keeper, &dataset.ddo, &on_chain.did)?;
    let encrypt_to = encryption_key(&policy, req, &signed)?;
    let request = JobRequest {
        image,
        entrypoint: container.entrypoint,
        algorithm,
        inputs,
        timeout_seconds: (policy.timeout_secs > 0).then_some(policy.timeout_secs),
        network: policy.allow_network_access,
        encrypt_to,
    };
    Ok(Authorized {
        request,
        record: record_of(&terms, &ids, dataset.did, req),
        terms,
        requires_approval: policy.requires_approval,
        review_outputs: policy.review_outputs,
        ids,
    })
}

/// The consumer and agreement a start request names, its algorithm present and its signature
/// checked, with the message signed: the strings as the client sent them (Squid signs exactly
/// these), which also authenticates the consumer's key for encrypted results.
fn signed_start(req: &StartRequest) -> Result<(Address, B256, String), AuthorizeError> {
    let signature = required(&req.signature, "signature")?;
    let agreement_text = required(&req.service_agreement_id, "serviceAgreementId")?;
    let consumer_text = required(&req.consumer_address, "consumerAddress")?;
    let consumer = parse_address(consumer_text)?;
    let agreement_id = parse_agreement_id(agreement_text)?;
    if req
        .algorithm_did
        .as_deref()
        .is_none_or(|d| d.trim().is_empty())
        && req.algorithm_meta.is_none()
    {
        return Err(AuthorizeError::Invalid(
            "algorithmDID or algorithmMeta is required".into(),
        ));
    }
    let signed = format!("{consumer_text}{agreement_text}");
    check_signature(consumer, &signed, signature)?;
    Ok((consumer, agreement_id, signed))
}

/// What the job's record keeps of its agreement, to settle it later without asking again.
fn record_of(
    terms: &Terms,
    ids: &ConditionIds,
    did: String,
    req: &StartRequest,
) -> AgreementRecord {
    AgreementRecord {
        agreement_id: terms.agreement_id.to_string(),
        did,
        price: terms.price.to_string(),
        publisher: terms.publisher.to_string(),
        consumer: terms.consumer.to_string(),
        lock_id: ids.lock.to_string(),
        compute_id: ids.compute.to_string(),
        escrow_id: ids.escrow.to_string(),
        output: req.output.clone(),
    }
}

/// The algorithm a start request names (a published one by DID, or raw code with its
/// container), checked against the dataset's policy.
async fn algorithm_of(
    ctx: &ChainContext,
    resolver: &Resolver,
    policy: &ComputePolicy,
    req: &StartRequest,
) -> Result<(AlgorithmSource, ddo::AlgorithmInfo), AuthorizeError> {
    match req
        .algorithm_did
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        Some(did) => published_algorithm(ctx, resolver, policy, did).await,
        None => raw_algorithm(policy, req.algorithm_meta.as_ref().expect("checked above")),
    }
}

/// A published algorithm: trusted by the dataset (when it names any), its code's location
/// decrypted when the provider encrypted it.
async fn published_algorithm(
    ctx: &ChainContext,
    resolver: &Resolver,
    policy: &ComputePolicy,
    algorithm_did: &str,
) -> Result<(AlgorithmSource, ddo::AlgorithmInfo), AuthorizeError> {
    let resolved = resolver.resolve(algorithm_did).await?;
    if !policy.trusted_algorithms.is_empty()
        && !policy
            .trusted_algorithms
            .contains(&resolved.did.to_lowercase())
    {
        return Err(AuthorizeError::Refused(format!(
            "algorithm {} is not trusted by this dataset",
            resolved.did
        )));
    }
    let info = ddo::algorithm_info(&resolved.ddo)?;
    let url = match ddo::encrypted_files(&resolved.ddo) {
        Some(hex_files) => {
            let keeper = ctx.keeper.as_ref().expect("chain checked");
            let plain = keeper.decrypt(&decode_hex(hex_files)?)?;
            ddo::file_urls(&plain)?.into_iter().next()
        }
        None => ddo::main(&resolved.ddo)
            .and_then(|m| m.pointer("/files/0/url"))
            .and_then(Value::as_str)
            .map(str::to_string),
    }
    .ok_or_else(|| AuthorizeError::Invalid(format!("algorithm {} names no file", resolved.did)))?;
    // Only a served publisher's algorithm may name a location the provider's own
    // credentials open (local files, its buckets); anyone else's is fetched over http(s).
    if !ctx.served(&resolved) && !is_http(&url) {
        return Err(AuthorizeError::Refused(format!(
            "algorithm {} is not a served publisher's; its code must be at an http(s) URL",
            resolved.did
        )));
    }
    Ok((
        AlgorithmSource {
            rawcode: None,
            url: Some(url),
            did: Some(resolved.did),
        },
        info,
    ))
}

/// Raw code (`algorithmMeta`): only where the dataset allows it, inline or at an http(s) URL.
fn raw_algorithm(
    policy: &ComputePolicy,
    meta: &Value,
) -> Result<(AlgorithmSource, ddo::AlgorithmInfo), AuthorizeError> {
    if !policy.allow_raw_algorithm {
        return Err(AuthorizeError::Refused("this dataset does not allow raw algorithms (privacy.allowRawAlgorithm); use a published, trusted algorithm".into()));
    }
    let info =
        ddo::container_info(meta.get("container").ok_or_else(|| {
            AuthorizeError::Invalid("algorithmMeta.container is required".into())
        })?)?;
    let rawcode = meta
        .get("rawcode")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let url = meta
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    if rawcode.is_none() && url.is_none() {
        return Err(AuthorizeError::Invalid(
            "algorithmMeta needs rawcode or url".into(),
        ));
    }
    // The provider's credentials must not fetch for the consumer: raw code comes over http(s).
    if url.as_deref().is_some_and(|u| !is_http(u)) {
        return Err(AuthorizeError::Invalid(
            "algorithmMeta.url must be an http(s) URL".into(),
        ));
    }
    Ok((
        AlgorithmSource {
            url: if rawcode.is_some() { None } else { url },
            rawcode,
            did: None,
        },
        info,
    ))
}

/// The dataset's files, decrypted: each becomes `/data/inputs/<did hex>/<n>`.
fn dataset_inputs(
    keeper: &Keeper,
    ddo_doc: &Value,
    did_bytes: &B256,
) -> Result<Vec<InputSource>, AuthorizeError> {
    let hex_files = ddo::encrypted_files(ddo_doc)
        .ok_or_else(|| AuthorizeError::Invalid("the dataset has no encryptedFiles".into()))?;
    let plain = keeper
        .decrypt(&decode_hex(hex_files)?)
        .map_err(|e| AuthorizeError::Internal(format!("dataset files: {e}")))?;
    let name = hex::encode(did_bytes);
    Ok(ddo::file_urls(&plain)?
        .into_iter()
        .map(|url| InputSource {
            url,
            name: Some(name.clone()),
        })
        .collect())
}

fn is_http(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn decode_hex(text: &str) -> Result<Vec<u8>, AuthorizeError> {
    hex::decode(text.trim().trim_start_matches("0x"))
        .map_err(|_| AuthorizeError::Invalid("encryptedFiles is not hex".into()))
}

/// Terms and condition ids back from a stored agreement record (for settlement).
pub fn terms_of(record: &AgreementRecord) -> Result<(Terms, ConditionIds), String> {
    let b =
        |s: &str| B256::from_str(s).map_err(|_| format!("stored agreement: {s:?} is not 32 bytes"));
    let a = |s: &str| {
        Address::from_str(s).map_err(|_| format!("stored agreement: {s:?} is not an address"))
    };
    let terms = Terms {
        agreement_id: b(&record.agreement_id)?,
        did: did::parse(&record.did)
            .ok_or_else(|| format!("stored agreement: bad DID {}", record.did))?,
        price: U256::from_str(&record.price)
            .map_err(|_| "stored agreement: bad price".to_string())?,
        publisher: a(&record.publisher)?,
        consumer: a(&record.consumer)?,
    };
    Ok((
        terms,
        ConditionIds {
            lock: b(&record.lock_id)?,
            compute: b(&record.compute_id)?,
            escrow: b(&record.escrow_id)?,
        },
    ))
}
