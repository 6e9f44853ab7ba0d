//! A dataset that asks for the publisher's approval of each job (`privacy.requiresApproval`),
//! end to end on the real parts: anvil with the keeper contracts 0.13.2, the service, Docker.
//! The job waits visibly, the publisher reviews the algorithm and approves or rejects it; a
//! rejection, or an agreement that expires first, ends the job without running and unpaid.

mod common;

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use brizo::chain::agreement;
use brizo::chain::contracts::ConditionState;
use brizo::squid::{Algorithm, Consumer};
use common::world::{PATIENCE, World, world};
use reqwest::Method;
use serde_json::{Value, json};

async fn gated(w: &World) -> (String, String) {
    let dataset = w.dataset(|t| t.requires_approval = true).await;
    (dataset, w.algorithm().await)
}

/// The consumer's view of the job, once it shows `status`.
async fn consumer_sees(
    w: &World,
    consumer: &Consumer,
    terms: &agreement::Terms,
    job: &str,
    status: i64,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = consumer
            .call(Method::GET, terms.agreement_id, Some(job))
            .await
            .unwrap()[0]
            .clone();
        if seen["status"] == status {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "never status {status}: {seen}\n{}",
            w.svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(w: &World, path: &str, body: Value) -> (u16, Value) {
    let res = w.svc.post(path).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn compute_state(w: &World, terms: &agreement::Terms) -> ConditionState {
    let provider = brizo::chain::provider(&w.chain.url).unwrap();
    let ids = agreement::condition_ids(&provider, &w.chain.addresses, terms)
        .await
        .unwrap();
    agreement::condition(&provider, &w.chain.addresses, ids.compute)
        .await
        .unwrap()
        .state
}

#[tokio::test]
async fn an_approved_job_runs_the_algorithm_reviewed_and_the_receipt_says_who_approved() {
    let w = world().await;
    let (dataset, algorithm) = gated(&w).await;
    let consumer = w.consumer(3);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm))
        .await
        .unwrap();
    // It waits, visibly, and nothing runs.
    let seen = consumer_sees(&w, &consumer, &terms, &job, 10).await;
    assert_eq!(seen["waiting"]["reason"], "approval", "{seen}");
    assert!(
        seen["statusText"].as_str().unwrap().contains("approval"),
        "{seen}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let record = w.svc.job(&job).await;
    assert_eq!(record["status"], 10, "{record}");
    assert_eq!(record["approval"]["state"], "pending", "{record}");
    assert!(common::containers_of(&w.svc.instance()).is_empty());

    // The publisher sees what would run.
    let review: Value = w
        .svc
        .get(&format!("/api/v2/jobs/{job}/algorithm"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = review["code"].as_str().unwrap();
    assert!(code.contains("sum.txt"), "{review}");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(code.as_bytes()));
    assert_eq!(review["sha256"], sha.as_str());
    assert_eq!(
        review["consumer"].as_str().unwrap().to_lowercase(),
        consumer.address().to_string().to_lowercase()
    );

    let (status, approved) = post(
        &w,
        &format!("/api/v2/jobs/{job}/approve"),
        json!({"by": "dana"}),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    let (again, answer) = post(&w, &format!("/api/v2/jobs/{job}/approve"), json!({})).await;
    assert_eq!(again, 409, "{answer}");
    let done = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(done["settlement"]["state"], "paid", "{done}");
    assert_eq!(w.svc.job(&job).await["outcome"], "succeeded");

    // The receipt binds the decision, and the code approved is the code that ran.
    let deadline = Instant::now() + PATIENCE;
    let receipt = loop {
        let res = w
            .svc
            .get(&format!("/api/v2/jobs/{job}/receipt"))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break res.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "no receipt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let body = &receipt["receipt"];
    assert_eq!(body["approval"]["state"], "approved", "{receipt}");
    assert_eq!(body["approval"]["by"], "dana");
    assert_eq!(body["approval"]["algorithmSha256"], sha.as_str());
    assert_eq!(body["algorithm"]["sha256"], sha.as_str());
}

#[tokio::test]
async fn a_rejected_job_ends_without_running_and_is_not_paid() {
    let w = world().await;
    let (dataset, algorithm) = gated(&w).await;
    let consumer = w.consumer(3);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let provider = w.chain.accounts[2].address;
    let before = consumer
        .chain
        .get_transaction_count(provider)
        .await
        .unwrap();
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm))
        .await
        .unwrap();
    consumer_sees(&w, &consumer, &terms, &job, 10).await;
    let (status, answer) = post(
        &w,
        &format!("/api/v2/jobs/{job}/reject"),
        json!({"reason": "it reads every row; ask for an aggregate"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let done = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(done["outcome"], "failed", "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("ask for an aggregate"),
        "{done}"
    );
    assert_eq!(done["settlement"]["state"], "not_paid", "{done}");
    assert_eq!(compute_state(&w, &terms).await, ConditionState::Unfulfilled);
    assert!(w.svc.job(&job).await["dateStarted"].is_null());
    // Nothing paid: the only transaction is the receipt's anchor.
    let deadline = Instant::now() + PATIENCE;
    while w.svc.job(&job).await["receiptHash"].is_null() {
        assert!(Instant::now() < deadline, "no receipt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        consumer
            .chain
            .get_transaction_count(provider)
            .await
            .unwrap(),
        before + 1
    );
    // A job that needs no approval cannot be approved.
    let plain = w.svc.submit(common::python_job("print(1)")).await;
    let (status, answer) = post(&w, &format!("/api/v2/jobs/{plain}/approve"), json!({})).await;
    assert_eq!(status, 409, "{answer}");
}

#[tokio::test]
async fn an_approval_not_given_before_the_agreement_expires_is_a_rejection() {
    let w = world().await;
    let (dataset, algorithm) = gated(&w).await;
    let consumer = w.consumer(3);
    // The compute condition times out 10 blocks after the agreement.
    let terms = consumer.order(&dataset, 10).await.unwrap();
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm))
        .await
        .unwrap();
    consumer_sees(&w, &consumer, &terms, &job, 10).await;
    let _: Value = consumer
        .chain
        .raw_request("anvil_mine".into(), (U256::from(20u64),))
        .await
        .unwrap();
    // The service sees the expiry on its own (it reads pending agreements every 15 s)...
    let done = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(done["outcome"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("expired"),
        "{done}"
    );
    assert_eq!(done["settlement"]["state"], "not_paid", "{done}");
    // ...and a late approval is refused.
    let (status, answer) = post(&w, &format!("/api/v2/jobs/{job}/approve"), json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(compute_state(&w, &terms).await, ConditionState::Unfulfilled);
}
