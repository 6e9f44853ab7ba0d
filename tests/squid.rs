//! The Squid-compatible v1 API end to end: a real local chain with the keeper contracts
//! 0.13.2 (anvil), the real service and Docker; signatures made with the development keys.
//! Needs `scripts/chain-deps.sh` and the Docker setup (`make test` does both).

mod common;

use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use brizo::assets::publish::{AlgorithmTerms, Asset, DatasetTerms};
use brizo::chain::agreement::{self, Terms};
use brizo::chain::contracts::ConditionState;
use brizo::chain::dev::{DEV_KEYS, DevChain, DevOptions};
use brizo::chain::signing_provider;
use brizo::squid::{Algorithm, Consumer};
use common::{IMAGE, Service};
use reqwest::Method;
use serde_json::{Value, json};

use common::world::{PATIENCE, World, world, world_with};

async fn post_start(svc: &Service, body: &Value) -> (u16, Value) {
    let res = svc
        .http
        .post(svc.url("/api/v1/brizo/services/compute"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let mut body: Value = res.json().await.unwrap_or(Value::Null);
    if let Some(r) = retry_after {
        body["retryAfter"] = json!(r);
    }
    (status, body)
}

fn start_body(consumer: &Consumer, agreement: &str, algorithm_did: &str) -> Value {
    let address = consumer.address().to_string();
    json!({"consumerAddress": address, "serviceAgreementId": agreement, "algorithmDID": algorithm_did,
           "signature": consumer.sign(&format!("{address}{agreement}"))})
}

/// The whole v1 story of one agreement: the service's identity, the published assets, a
/// job started with a Squid client, its results, the settlement, the receipt, and what the
/// consumer (and another) can do with the job afterwards.
#[tokio::test]
async fn a_consumer_runs_a_published_algorithm_and_the_publisher_is_paid() {
    let w = world().await;
    the_service_names_its_provider_and_contracts(&w).await;
    let dataset = w.dataset(|_| {}).await;
    let algorithm = w.algorithm().await;
    the_public_ddo_hides_where_the_data_is(&w, &dataset).await;

    let consumer = w.consumer(3);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let publisher_before = consumer.balance(terms.publisher).await.unwrap();
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm.clone()))
        .await
        .unwrap();
    assert_eq!(job.len(), 32);

    let status = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(status["statusText"], "Job finished", "{status}");
    assert_eq!(status["outcome"], "succeeded", "{status}");
    assert_eq!(status["jobId"], job.as_str());
    assert_eq!(status["owner"], consumer.address().to_string());
    assert_eq!(status["agreementId"], hex::encode(terms.agreement_id));
    assert_eq!(status["stopreq"], 0);
    assert_eq!(status["removed"], 0);
    assert_eq!(status["settlement"]["state"], "paid", "{status}");

    let results = results_and_log_go_to_the_consumer_only(&w, &consumer, &status, &job).await;
    every_condition_is_fulfilled_and_the_publisher_paid(&w, &consumer, &terms, publisher_before)
        .await;
    let ran = (dataset.as_str(), algorithm.as_str());
    the_receipt_is_anchored_and_verifies(&w, &consumer, &terms, &job, ran).await;
    afterwards_the_job_is_the_consumers_alone(&w, &consumer, &terms, &job, &algorithm, &results)
        .await;
}

async fn the_service_names_its_provider_and_contracts(w: &World) {
    let info: Value = w
        .svc
        .http
        .get(w.svc.url("/api/v1/brizo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info["provider-address"],
        w.chain.accounts[2].address.to_string()
    );
    assert_eq!(
        info["contracts"]["DIDRegistry"],
        w.chain.addresses.get("DIDRegistry").unwrap().to_string()
    );
}

/// The DDO in the metadata store never shows where the data is.
async fn the_public_ddo_hides_where_the_data_is(w: &World, dataset: &str) {
    let ddo: Value = w
        .svc
        .http
        .get(w.svc.url(&format!("/api/v1/aquarius/assets/ddo/{dataset}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !ddo.to_string().contains("values.txt"),
        "a file location leaked into the public DDO: {ddo}"
    );
}

/// Results and the log, for this consumer only; the results' URL.
async fn results_and_log_go_to_the_consumer_only(
    w: &World,
    consumer: &Consumer,
    status: &Value,
    job: &str,
) -> String {
    let url = status["resultsUrls"][0].as_str().unwrap();
    assert_eq!(&consumer.download(url, job).await.unwrap()[..], b"12");
    let log = consumer
        .download(status["algorithmLogUrl"].as_str().unwrap(), job)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&log).contains("sum 12 of 1 file(s)"));
    let stranger = w.consumer(4);
    assert!(
        stranger.download(url, job).await.is_err(),
        "another consumer downloaded the results"
    );
    let res = w.svc.http.get(url).send().await.unwrap();
    assert_eq!(res.status(), 400, "unsigned download must be refused");
    url.to_string()
}

/// Settlement on chain: every condition fulfilled, the publisher paid the price.
async fn every_condition_is_fulfilled_and_the_publisher_paid(
    w: &World,
    consumer: &Consumer,
    terms: &Terms,
    publisher_before: U256,
) {
    let provider = brizo::chain::provider(&w.chain.url).unwrap();
    let ids = agreement::condition_ids(&provider, &w.chain.addresses, terms)
        .await
        .unwrap();
    for id in [ids.lock, ids.compute, ids.escrow] {
        assert_eq!(
            agreement::condition(&provider, &w.chain.addresses, id)
                .await
                .unwrap()
                .state,
            ConditionState::Fulfilled
        );
    }
    assert_eq!(
        consumer.balance(terms.publisher).await.unwrap() - publisher_before,
        terms.price
    );
}

/// The receipt: issued after settlement, anchored on chain, served to the consumer, naming
/// the dataset and algorithm that `ran`; the anchor holds its hash and no other.
async fn the_receipt_is_anchored_and_verifies(
    w: &World,
    consumer: &Consumer,
    terms: &Terms,
    job: &str,
    (dataset, algorithm): (&str, &str),
) {
    let deadline = Instant::now() + PATIENCE;
    let receipt_url = loop {
        let status = &consumer
            .call(Method::GET, terms.agreement_id, Some(job))
            .await
            .unwrap()[0];
        if let Some(url) = status["receiptUrl"].as_str().filter(|u| !u.is_empty()) {
            break url.to_string();
        }
        assert!(Instant::now() < deadline, "no receipt: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let signed: Value =
        serde_json::from_slice(&consumer.download(&receipt_url, job).await.unwrap()).unwrap();
    let r = &signed["receipt"];
    assert_eq!(r["agreementId"], terms.agreement_id.to_string());
    assert_eq!(r["consumer"], consumer.address().to_string());
    assert_eq!(r["provider"], w.chain.accounts[2].address.to_string());
    assert_eq!(r["chainId"], w.chain.chain_id);
    assert_eq!(r["inputs"][0]["did"], dataset);
    assert!(
        r["inputs"][0]["source"].is_null(),
        "a dataset's file location leaked into its receipt"
    );
    assert_eq!(r["algorithm"]["did"], algorithm);
    assert_eq!(r["settlement"]["state"], "paid");
    assert!(
        r["settlement"]["computeTx"].is_string() && r["settlement"]["rewardTx"].is_string(),
        "{r}"
    );
    let dir = tempfile::tempdir().unwrap();
    let receipt_file = dir.path().join("receipt.json");
    std::fs::write(&receipt_file, serde_json::to_string(&signed).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_brizo"))
        .args(["proof", "verify"])
        .arg(&receipt_file)
        .args([
            "--keeper-url",
            &w.chain.url,
            "--provider",
            &w.chain.accounts[2].address.to_string(),
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("anchored on chain"),
        "{text}"
    );
    // The anchor holds this receipt's hash and no other.
    let mut other: brizo::proof::receipt::SignedReceipt =
        serde_json::from_value(signed.clone()).unwrap();
    other.hash = format!("0x{}", "ab".repeat(32));
    let registry = w.chain.addresses.get("DIDRegistry").unwrap();
    let provider_chain = brizo::chain::provider(&w.chain.url).unwrap();
    let err = brizo::proof::verify::check_anchor(&other, &provider_chain, registry)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("anchor mismatch"), "{err}");
}

/// One job per agreement; only its consumer lists, stops or deletes it; deleting it takes
/// its results; a settled agreement runs nothing more.
async fn afterwards_the_job_is_the_consumers_alone(
    w: &World,
    consumer: &Consumer,
    terms: &Terms,
    job: &str,
    algorithm: &str,
    results: &str,
) {
    let stranger = w.consumer(4);
    // One job per agreement: starting again answers the same job.
    assert_eq!(
        consumer
            .start(terms.agreement_id, &Algorithm::Did(algorithm.to_string()))
            .await
            .unwrap(),
        *job
    );

    // Listing without a job id; another consumer sees nothing of it.
    assert_eq!(
        consumer
            .call(Method::GET, terms.agreement_id, None)
            .await
            .unwrap()
            .len(),
        1
    );
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let err = stranger
            .call(method.clone(), terms.agreement_id, Some(job))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{method}: {err}");
    }
    // Delete: the job is marked removed and its results go.
    let after = consumer
        .call(Method::DELETE, terms.agreement_id, Some(job))
        .await
        .unwrap();
    assert_eq!(after[0]["removed"], 1);
    assert!(consumer.download(results, job).await.is_err());
    // A settled agreement runs nothing more.
    let err = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm.to_string()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("403") && err.to_string().contains("already settled"),
        "{err}"
    );
}

/// A refused start request: what it is, its body, and the status and words of the answer.
type Refusal = (&'static str, Value, u16, &'static str);

#[tokio::test]
async fn requests_are_refused_with_the_reason() {
    let w = world().await;
    let dataset = w.dataset(|_| {}).await;
    let algorithm = w.algorithm().await;
    let raw_ok = w
        .dataset(|d| {
            d.allow_raw_algorithm = true;
            d.allow_network_access = true;
        })
        .await;
    let consumer = w.consumer(3);
    let paid = consumer.order(&dataset, 0).await.unwrap();
    let agreement = paid.agreement_id.to_string();
    let raw_order = consumer.order(&raw_ok, 0).await.unwrap();

    let mut cases = signature_refusals(&w, &consumer, &dataset, &agreement, &algorithm).await;
    cases.extend(malformed_refusals(&consumer, &agreement, &algorithm));
    cases.extend(on_chain_refusals(&w, &consumer, &dataset, &paid, &algorithm).await);
    let mut wrong_image = start_body(&consumer, &raw_order.agreement_id.to_string(), "");
    wrong_image.as_object_mut().unwrap().remove("algorithmDID");
    wrong_image["algorithmMeta"] = json!({"rawcode": "print(1)", "container": {"image": "debian", "tag": "bookworm", "entrypoint": "python3 $ALGO"}});
    cases.push((
        "raw code allowed, in an image the dataset does not support",
        wrong_image,
        403,
        "not one the dataset supports",
    ));
    for (name, body, status, needle) in cases {
        let (got, answer) = post_start(&w.svc, &body).await;
        assert_eq!(got, status, "{name}: {answer}");
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error message: {answer}"));
        assert!(
            message.contains(needle),
            "{name}: {message:?} lacks {needle:?}"
        );
    }
    // None of the refused requests started a job.
    let list: Vec<Value> = w
        .svc
        .get("/api/v2/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.is_empty(), "{list:?}");

    // The same agreement with a valid auth token and a lower-case address is accepted.
    let mut with_token = start_body(&consumer, agreement.trim_start_matches("0x"), &algorithm);
    with_token["consumerAddress"] = json!(consumer.address().to_string().to_lowercase());
    with_token["signature"] = json!(auth_token(&consumer, now_secs()));
    with_token["algorithmDid"] = with_token
        .as_object_mut()
        .unwrap()
        .remove("algorithmDID")
        .unwrap();
    let (got, answer) = post_start(&w.svc, &with_token).await;
    assert_eq!(got, 200, "{answer}");
    raw_code_runs_where_the_dataset_allows_it(&w, &consumer, &raw_order).await;
    // The provider key never reaches the service's log.
    assert!(
        !w.svc.log().contains(DEV_KEYS[2].trim_start_matches("0x")),
        "the provider key was logged"
    );
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// squid-py's auth token for time `ts`: the signed message and the time.
fn auth_token(consumer: &Consumer, ts: u64) -> String {
    format!(
        "{}-{ts}",
        consumer.sign(&format!("Ocean Protocol Authentication\n{ts}"))
    )
}

/// Signatures that do not prove the consumer asks (a valid auth token is accepted as a
/// signature: checked by the success at the end of the test).
async fn signature_refusals(
    w: &World,
    consumer: &Consumer,
    dataset: &str,
    agreement: &str,
    algorithm: &str,
) -> Vec<Refusal> {
    let other = w.consumer(4);
    let mut cases: Vec<Refusal> = vec![];
    // Signed by someone else than the consumer it names.
    let mut forged = start_body(consumer, agreement, algorithm);
    forged["signature"] = json!(other.sign(&format!("{}{agreement}", consumer.address())));
    cases.push(("wrong signer", forged, 401, "signature"));
    // A signature made for one agreement, replayed for another of the same consumer.
    let second = consumer.order(dataset, 0).await.unwrap();
    let mut replayed = start_body(consumer, &second.agreement_id.to_string(), algorithm);
    replayed["signature"] = start_body(consumer, agreement, algorithm)["signature"].clone();
    cases.push(("replayed signature", replayed, 401, "signature"));
    // Another consumer, correctly signed, on someone else's agreement.
    cases.push((
        "other consumer",
        start_body(&other, agreement, algorithm),
        403,
        "not the consumer",
    ));
    // Auth tokens: tampered, stale.
    let now = now_secs();
    let mut tampered = start_body(consumer, agreement, algorithm);
    tampered["signature"] = json!(
        auth_token(consumer, now - 10).replace(&format!("-{}", now - 10), &format!("-{}", now - 5))
    );
    cases.push(("tampered token", tampered, 401, "signature"));
    let mut stale = start_body(consumer, agreement, algorithm);
    stale["signature"] = json!(auth_token(consumer, now - 25 * 3600));
    cases.push(("stale token", stale, 401, "expired"));
    cases
}

/// Raw code on a dataset that does not allow it; an unknown agreement; malformed fields.
fn malformed_refusals(consumer: &Consumer, agreement: &str, algorithm: &str) -> Vec<Refusal> {
    let mut raw = start_body(consumer, agreement, "");
    raw.as_object_mut().unwrap().remove("algorithmDID");
    raw["algorithmMeta"] = json!({"rawcode": "print(1)", "container": {"image": "brizo/python", "tag": "3.11-bookworm", "entrypoint": "python3 $ALGO"}});
    let address = consumer.address().to_string();
    vec![
        ("raw code not allowed", raw, 403, "raw algorithms"),
        (
            "unknown agreement",
            start_body(consumer, &format!("0x{}", "12".repeat(32)), algorithm),
            404,
            "unknown agreement",
        ),
        (
            "missing signature",
            json!({"consumerAddress": address, "serviceAgreementId": agreement, "algorithmDID": algorithm}),
            400,
            "signature is required",
        ),
        (
            "bad address",
            json!({"consumerAddress": "0x123", "serviceAgreementId": agreement, "algorithmDID": algorithm, "signature": "0x00"}),
            400,
            "not an Ethereum address",
        ),
        (
            "bad agreement id",
            json!({"consumerAddress": address, "serviceAgreementId": "xyz", "algorithmDID": algorithm, "signature": "0x00"}),
            400,
            "32 bytes",
        ),
    ]
}

/// What the chain says against a start: an agreement created but not paid, one expired, a
/// dataset that does not trust the algorithm.
async fn on_chain_refusals(
    w: &World,
    consumer: &Consumer,
    dataset: &str,
    paid: &Terms,
    algorithm: &str,
) -> Vec<Refusal> {
    let unpaid = Terms {
        agreement_id: alloy::primitives::B256::from(rand::random::<[u8; 32]>()),
        ..*paid
    };
    let provider_address = w.chain.accounts[2].address;
    agreement::create(
        &consumer.chain,
        &w.chain.addresses,
        &unpaid,
        provider_address,
        [0, 0, 0],
    )
    .await
    .unwrap();
    // The compute condition times out after 2 blocks.
    let expiring = consumer.order(dataset, 2).await.unwrap();
    let _: Value = consumer
        .chain
        .raw_request("anvil_mine".into(), (U256::from(5u64),))
        .await
        .unwrap();
    let untrusting = w
        .dataset(|d| d.trusted_algorithms = vec![format!("did:op:{}", "ab".repeat(32))])
        .await;
    let untrusted = consumer.order(&untrusting, 0).await.unwrap();
    let start = |terms: &Terms| start_body(consumer, &terms.agreement_id.to_string(), algorithm);
    vec![
        ("lock not fulfilled", start(&unpaid), 403, "not locked"),
        ("expired agreement", start(&expiring), 403, "expired"),
        ("untrusted algorithm", start(&untrusted), 403, "not trusted"),
    ]
}

/// Raw code runs where the dataset allows it; this dataset allows network access, and the
/// container got one (it has none by default).
async fn raw_code_runs_where_the_dataset_allows_it(w: &World, consumer: &Consumer, terms: &Terms) {
    let mut raw_run = start_body(consumer, &terms.agreement_id.to_string(), "");
    raw_run.as_object_mut().unwrap().remove("algorithmDID");
    raw_run["algorithmMeta"] = json!({"rawcode": "import os\nprint('raw ran; nets', sorted(os.listdir('/sys/class/net')), flush=True)",
        "container": {"image": "brizo/python", "tag": "3.11-bookworm", "entrypoint": "python3 $ALGO"}});
    let (got, answer) = post_start(&w.svc, &raw_run).await;
    assert_eq!(got, 200, "{answer}");
    let job = answer["jobId"].as_str().unwrap();
    let status = w.wait_finished(consumer, terms, job).await;
    assert_eq!(status["outcome"], "succeeded", "{status}");
    let log = String::from_utf8_lossy(
        &consumer
            .download(status["algorithmLogUrl"].as_str().unwrap(), job)
            .await
            .unwrap(),
    )
    .to_string();
    assert!(log.contains("raw ran") && log.contains("eth0"), "{log}");
}

#[tokio::test]
async fn an_unreachable_chain_answers_503_and_running_jobs_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // Deploy, keep the artifacts, stop the node.
    let chain = DevChain::start(&DevOptions::new(
        common::free_port(),
        dir.path().join("artifacts"),
    ))
    .await
    .unwrap();
    let dead_url = chain.url.clone();
    let consumer_address = chain.accounts[3].address.to_string();
    drop(chain);
    let svc = Service::start_with(&[
        ("BRIZO_CHAIN__KEEPER_URL", dead_url.as_str()),
        (
            "BRIZO_CHAIN__ARTIFACTS_DIR",
            dir.path().join("artifacts").to_str().unwrap(),
        ),
        ("BRIZO_PROVIDER_KEY", DEV_KEYS[3]),
    ])
    .await;
    let consumer: PrivateKeySigner = DEV_KEYS[3].parse().unwrap();
    let agreement = format!("0x{}", "34".repeat(32));
    let body = json!({"consumerAddress": consumer_address, "serviceAgreementId": agreement, "algorithmDID": format!("did:op:{}", "56".repeat(32)),
        "signature": consumer.sign_message_sync(format!("{consumer_address}{agreement}").as_bytes()).unwrap().to_string()});
    let (status, answer) = post_start(&svc, &body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["retryAfter"], "5");
    assert!(
        answer["error"].as_str().unwrap().contains("unreachable"),
        "{answer}"
    );
    // The engine is not held up by the chain.
    let id = svc
        .submit(common::python_job("print('still running')"))
        .await;
    assert_eq!(
        svc.wait_finished(&id, PATIENCE).await["outcome"],
        "succeeded"
    );
}

#[tokio::test]
async fn a_restart_between_start_and_settlement_sends_nothing_twice() {
    let mut w = world().await;
    let dataset = w.dataset(|_| {}).await;
    let slow = {
        let url = w.svc.dataset(
            "algorithms/slow.py",
            "import time\ntime.sleep(2)\nprint('done', flush=True)\n",
        );
        let (image, tag) = IMAGE.split_once(':').unwrap();
        w.publish(Asset::Algorithm(AlgorithmTerms {
            name: "slow".into(),
            file: url,
            image: image.into(),
            tag: tag.into(),
            entrypoint: "python3 $ALGO".into(),
        }))
        .await
    };
    let consumer = w.consumer(3);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let provider_address = w.chain.accounts[2].address;
    let before = consumer
        .chain
        .get_transaction_count(provider_address)
        .await
        .unwrap();
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(slow))
        .await
        .unwrap();
    // Starting sends nothing: the compute condition is fulfilled once the algorithm ran.
    let after_start = consumer
        .chain
        .get_transaction_count(provider_address)
        .await
        .unwrap();
    assert_eq!(after_start, before);
    w.svc.wait_status(&job, 40, PATIENCE).await;
    w.svc.kill9();
    w.svc.spawn().await;
    let status = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(status["settlement"]["state"], "paid", "{status}");
    let deadline = Instant::now() + PATIENCE;
    while consumer
        .call(Method::GET, terms.agreement_id, Some(&job))
        .await
        .unwrap()[0]["receiptUrl"]
        == ""
    {
        assert!(Instant::now() < deadline, "no receipt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly three transactions: the compute condition, the reward, the receipt's anchor.
    assert_eq!(
        consumer
            .chain
            .get_transaction_count(provider_address)
            .await
            .unwrap(),
        after_start + 3
    );
    // Another restart after settlement sends nothing.
    w.svc.kill9();
    w.svc.spawn().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        consumer
            .chain
            .get_transaction_count(provider_address)
            .await
            .unwrap(),
        after_start + 3
    );
    let _ = &w.dir;
}

#[tokio::test]
async fn a_job_that_never_ran_leaves_the_reward_in_escrow() {
    // The dataset's file sits on a server that answers 404: data provisioning fails, through
    // no fault of the consumer's. (Loopback is allowed here so the test server is reachable.)
    let w = world_with(&[("BRIZO_INPUTS__ALLOW_PRIVATE_ADDRESSES", "true")]).await;
    let server = common::http_files(vec![]).await;
    let (image, tag) = IMAGE.split_once(':').unwrap();
    let dataset = w
        .publish(Asset::Dataset(DatasetTerms {
            name: "gone".into(),
            files: vec![format!("http://{server}/gone.csv")],
            price: U256::from(5u64),
            timeout_secs: 60,
            allow_raw_algorithm: false,
            trusted_algorithms: vec![],
            allow_network_access: false,
            requires_approval: false,
            review_outputs: false,
            encrypt_results: false,
            sample: vec![],
            containers: vec![(image.into(), tag.into())],
        }))
        .await;
    let algorithm = w.algorithm().await;
    let consumer = w.consumer(3);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let before = consumer.balance(terms.publisher).await.unwrap();
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm))
        .await
        .unwrap();
    let status = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(status["status"], 31, "{status}");
    assert!(
        !status.to_string().contains("gone.csv"),
        "the dataset's location leaked to the consumer: {status}"
    );
    assert_eq!(status["settlement"]["state"], "not_paid", "{status}");
    assert!(
        status["settlement"]["reason"]
            .as_str()
            .unwrap()
            .contains("returns to the consumer")
    );
    let provider = brizo::chain::provider(&w.chain.url).unwrap();
    let ids = agreement::condition_ids(&provider, &w.chain.addresses, &terms)
        .await
        .unwrap();
    // Neither compute nor escrow fulfilled: after the time out the consumer can abort and be refunded.
    assert_eq!(
        agreement::condition(&provider, &w.chain.addresses, ids.compute)
            .await
            .unwrap()
            .state,
        ConditionState::Unfulfilled
    );
    assert_eq!(
        agreement::condition(&provider, &w.chain.addresses, ids.escrow)
            .await
            .unwrap()
            .state,
        ConditionState::Unfulfilled
    );
    assert_eq!(
        consumer.balance(terms.publisher).await.unwrap(),
        before,
        "the publisher was paid for a job that never ran"
    );
}

#[tokio::test]
async fn results_become_an_asset_owned_by_the_consumer() {
    let w = world().await;
    let dataset = w.dataset(|_| {}).await;
    let algorithm = w.algorithm().await;
    let consumer = w.consumer(3);
    let friend = w.consumer(4);
    let stranger = w.consumer(5);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let output = json!({"publishOutput": 1, "publishAlgorithmLog": 0, "whitelist": [friend.address().to_string()]});
    let job = consumer
        .start_with(
            terms.agreement_id,
            &Algorithm::Did(algorithm.clone()),
            output,
        )
        .await
        .unwrap();
    w.wait_finished(&consumer, &terms, &job).await;
    let status = with_results_asset_and_receipt(&w, &consumer, &terms, &job).await;
    let results_did = status["resultsDid"].as_str().unwrap();
    let ddo = owned_and_resolved_the_ocean_way(&w, &consumer, results_did).await;
    assert_eq!(ddo["id"], results_did);
    let provenance = &ddo["service"][0]["attributes"]["additionalInformation"]["provenance"];
    assert_eq!(provenance["sourceDatasets"][0], dataset.as_str());
    assert_eq!(provenance["algorithm"]["did"], algorithm.as_str());
    assert_eq!(provenance["jobId"], job.as_str());
    assert_eq!(provenance["agreementId"], terms.agreement_id.to_string());
    assert_eq!(ddo["publicKey"][0]["owner"], consumer.address().to_string());
    assert!(
        !ddo.to_string().contains("/results/"),
        "result locations must stay encrypted: {ddo}"
    );
    // The receipt names it.
    let signed: Value = serde_json::from_slice(
        &consumer
            .download(status["receiptUrl"].as_str().unwrap(), &job)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(signed["receipt"]["resultsDid"], results_did);
    // The log is not published (publishAlgorithmLog 0); results go to the consumer and the
    // whitelisted address only.
    assert_eq!(status["algorithmLogUrl"], "");
    let log_url = format!(
        "{}/api/v1/brizo/services/compute/results/{job}/logs",
        w.svc.base
    );
    assert!(consumer.download(&log_url, &job).await.is_err());
    let url = status["resultsUrls"][0].as_str().unwrap();
    assert_eq!(&consumer.download(url, &job).await.unwrap()[..], b"12");
    assert_eq!(&friend.download(url, &job).await.unwrap()[..], b"12");
    assert!(stranger.download(url, &job).await.is_err());
}

/// The v1 status of `job` once its results asset and its receipt are there.
async fn with_results_asset_and_receipt(
    w: &World,
    consumer: &Consumer,
    terms: &Terms,
    job: &str,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = consumer
            .call(Method::GET, terms.agreement_id, Some(job))
            .await
            .unwrap()
            .remove(0);
        if status["resultsDid"] != "" && status["receiptUrl"] != "" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no results asset: {status}\n{}",
            w.svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The results asset is owned by the consumer on chain, and resolves the Ocean way:
/// DIDRegistry's event at the DID's last update names the DDO's URL, in this metadata store.
/// Its DDO.
async fn owned_and_resolved_the_ocean_way(
    w: &World,
    consumer: &Consumer,
    results_did: &str,
) -> Value {
    let provider = brizo::chain::provider(&w.chain.url).unwrap();
    let registry = brizo::chain::contracts::DIDRegistry::new(
        w.chain.addresses.get("DIDRegistry").unwrap(),
        &provider,
    );
    let id = brizo::assets::did::parse(results_did).unwrap();
    assert_eq!(
        registry.getDIDOwner(id).call().await.unwrap(),
        consumer.address()
    );
    let block = registry
        .getBlockNumberUpdated(id)
        .call()
        .await
        .unwrap()
        .to::<u64>();
    let filter = alloy::rpc::types::Filter::new()
        .address(w.chain.addresses.get("DIDRegistry").unwrap())
        .event_signature(<brizo::chain::contracts::DIDRegistry::DIDAttributeRegistered as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
        .topic1(id)
        .from_block(block)
        .to_block(block);
    let logs = provider.get_logs(&filter).await.unwrap();
    let event = logs[0]
        .log_decode::<brizo::chain::contracts::DIDRegistry::DIDAttributeRegistered>()
        .unwrap();
    let ddo_url = event.inner.data._value.clone();
    assert_eq!(
        ddo_url,
        w.svc
            .url(&format!("/api/v1/aquarius/assets/ddo/{results_did}"))
    );
    let ddo: Value = w
        .svc
        .http
        .get(&ddo_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ddo
}

/// A DDO as squid-py 0.9.3's `OceanAssets.create` writes it for `id` (its proof signed as
/// squid-py signs it), the creator's address in lower case, as an account squid-py is given
/// may have it.
fn squid_py_ddo(creator: &PrivateKeySigner, id: B256, endpoint: &str) -> Value {
    let did = brizo::assets::did::format(&id);
    let address = creator.address().to_string().to_lowercase();
    let signature = creator
        .sign_hash_sync(&brizo::assets::metadata::squid_py_proof_hash(&id))
        .unwrap()
        .to_string();
    json!({
        "@context": "https://w3id.org/did/v1", "id": did, "created": "2020-06-01T10:00:00Z",
        "publicKey": [{"id": did, "type": "EthereumECDSAKey", "owner": address}],
        "authentication": [{"type": "RsaSignatureAuthentication2018", "publicKey": did}],
        "service": [{"type": "metadata", "index": 0, "serviceEndpoint": endpoint,
                     "attributes": {"main": {"type": "algorithm", "name": "squid-py's", "files": [{"index": 0}]}, "encryptedFiles": "0x00"}}],
        "proof": {"type": "DDOIntegritySignature", "created": "2020-06-01T10:00:00Z", "creator": address, "signatureValue": signature, "checksum": {"0": "0x00"}},
    })
}

/// The dev chain's roles as squid-py would act for them: registering a DID, posting its
/// DDO to this service's metadata store.
struct Registrar<'a> {
    w: &'a World,
}

impl Registrar<'_> {
    fn key(&self, i: usize) -> PrivateKeySigner {
        DEV_KEYS[i].parse().unwrap()
    }

    fn as_role(&self, i: usize) -> alloy::providers::DynProvider {
        signing_provider(&self.w.chain.url, DEV_KEYS[i]).unwrap().0
    }

    fn endpoint(&self, id: B256) -> String {
        self.w.svc.url(&format!(
            "/api/v1/aquarius/assets/ddo/{}",
            brizo::assets::did::format(&id)
        ))
    }

    /// squid-py registers with the id as checksum and no providers, then posts the DDO.
    async fn register(&self, i: usize, id: B256) {
        let url = self.endpoint(id);
        agreement::register_did(
            &self.as_role(i),
            &self.w.chain.addresses,
            id,
            id,
            vec![],
            &url,
        )
        .await
        .unwrap();
    }

    /// Posts a DDO signed squid-py style by role `signer`: the answer's status and body.
    async fn post(&self, signer: usize, id: B256) -> (u16, Value) {
        let ddo = squid_py_ddo(&self.key(signer), id, &self.endpoint(id));
        self.post_ddo(&ddo).await
    }

    async fn post_ddo(&self, ddo: &Value) -> (u16, Value) {
        let svc = &self.w.svc;
        let res = svc
            .http
            .post(svc.url("/api/v1/aquarius/assets/ddo"))
            .json(ddo)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    }

    async fn stored(&self, id: B256) -> reqwest::Response {
        self.w.svc.http.get(self.endpoint(id)).send().await.unwrap()
    }
}

fn fresh_id() -> B256 {
    B256::from(rand::random::<[u8; 32]>())
}

#[tokio::test]
async fn the_metadata_store_takes_a_ddo_only_from_its_dids_owner_on_chain() {
    let w = world().await;
    let r = Registrar { w: &w };
    let svc = &w.svc;

    // Registered on chain by its creator, then posted squid-py style: stored.
    let id = fresh_id();
    r.register(4, id).await;
    let ddo = squid_py_ddo(&r.key(4), id, &r.endpoint(id));
    let (status, body) = r.post_ddo(&ddo).await;
    assert_eq!(status, 201, "{body}\n{}", svc.log());
    assert_eq!(r.stored(id).await.json::<Value>().await.unwrap(), ddo);

    // Registered to someone else: refused, whoever signed.
    let id = fresh_id();
    r.register(4, id).await;
    let (status, body) = r.post(5, id).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("owned on chain by"),
        "{body}"
    );
    assert_eq!(r.stored(id).await.status(), 404);

    // Not registered at all: refused.
    let id = fresh_id();
    let (status, body) = r.post(4, id).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not registered"),
        "{body}"
    );

    // squid-py's `create(owner_address=...)`: registered, handed over, then posted by the
    // registrant. Taken from a publisher this service serves (the provider by default) only.
    for (registrant, expected) in [(2, 201), (4, 403)] {
        let id = fresh_id();
        r.register(registrant, id).await;
        let registry = brizo::chain::contracts::DIDRegistry::new(
            w.chain.addresses.get("DIDRegistry").unwrap(),
            r.as_role(registrant),
        );
        registry
            .transferDIDOwnership(id, w.chain.accounts[3].address)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let (status, body) = r.post(registrant, id).await;
        assert_eq!(status, expected, "registrant {registrant}: {body}");
    }

    // `brizo asset publish` (registers, then posts an EIP-191 proof) still publishes.
    let algorithm = w.algorithm().await;
    assert_eq!(
        svc.http
            .get(svc.url(&format!("/api/v1/aquarius/assets/ddo/{algorithm}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
