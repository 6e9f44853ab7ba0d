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
use sha2::Digest;

async fn gated(w: &World) -> (String, String) {
    let dataset = w.dataset(|t| t.requires_approval = true).await;
    (dataset, w.algorithm().await)
}

/// The consumer orders `dataset` (its compute condition timing out `timeout` blocks after
/// the agreement; 0: never) and starts the published `algorithm` on it: the terms, the job.
async fn order_and_start(
    consumer: &Consumer,
    dataset: &str,
    algorithm: String,
    timeout: u64,
) -> (agreement::Terms, String) {
    let terms = consumer.order(dataset, timeout).await.unwrap();
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm))
        .await
        .unwrap();
    (terms, job)
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

/// The publisher's CLI (`brizo job ...`) against the service; its stdout, or a panic with
/// its stderr.
fn cli(w: &World, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_brizo"))
        .arg("job")
        .args(args)
        .args(["--server", &w.svc.base, "--token", common::TOKEN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "brizo job {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let (terms, job) = order_and_start(&consumer, &dataset, algorithm, 0).await;
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
        .get_json(&format!("/api/v2/jobs/{job}/algorithm"))
        .await;
    let code = review["code"].as_str().unwrap();
    assert!(code.contains("sum.txt"), "{review}");
    let digest = image_id(common::IMAGE);
    assert_eq!(review["imageDigest"], digest.as_str(), "{review}");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(code.as_bytes()));
    assert_eq!(review["sha256"], sha.as_str());
    assert_eq!(
        review["consumer"].as_str().unwrap().to_lowercase(),
        consumer.address().to_string().to_lowercase()
    );

    // The same through the CLI, as a publisher does it.
    let shown = cli(&w, &["review", &job]);
    assert!(shown.contains(&sha), "{shown}");
    assert!(shown.contains(&digest), "{shown}");
    assert!(shown.contains("sum.txt"), "{shown}");
    let approved = cli(&w, &["approve", &job, "--by", "dana"]);
    assert!(approved.contains("approved"), "{approved}");
    let (again, answer) = post(&w, &format!("/api/v2/jobs/{job}/approve"), json!({})).await;
    assert_eq!(again, 409, "{answer}");
    let done = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(done["settlement"]["state"], "paid", "{done}");
    assert_eq!(w.svc.job(&job).await["outcome"], "succeeded");

    // The receipt binds the decision, and the code approved is the code that ran.
    let receipt = w.svc.receipt(&job).await;
    let body = &receipt["receipt"];
    assert_eq!(body["approval"]["state"], "approved", "{receipt}");
    assert_eq!(body["approval"]["by"], "dana");
    assert_eq!(body["approval"]["algorithmSha256"], sha.as_str());
    assert_eq!(body["algorithm"]["sha256"], sha.as_str());
    assert_eq!(body["approval"]["imageDigest"], digest.as_str());
    assert_eq!(body["imageDigest"], digest.as_str());
}

/// The engine's id of a local image.
fn image_id(image: &str) -> String {
    let out = std::process::Command::new("/usr/bin/docker")
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds (offline, from the base image) an image that differs from others by a label.
fn build_image(tag: &str, label: &str) -> String {
    use std::io::Write;
    let mut build = std::process::Command::new("/usr/bin/docker")
        .args(["build", "-q", "-t", tag, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    write!(
        build.stdin.take().unwrap(),
        "FROM {}\nLABEL brizo.test={label}\n",
        common::IMAGE
    )
    .unwrap();
    let out = build.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    image_id(tag)
}

#[tokio::test]
async fn an_image_retagged_after_approval_does_not_run() {
    let (name, tag) = (format!("brizo/approval-pin-{}", std::process::id()), "t");
    let image = format!("{name}:{tag}");
    let approved_id = build_image(&image, "approved");
    // One run slot, taken by a job that sleeps: the approved job waits for it.
    let w = common::world::world_with(&[("BRIZO_MAX_RUNNING_JOBS", "1")]).await;
    let dataset = w
        .dataset(|t| {
            t.requires_approval = true;
            t.containers = vec![(name.clone(), tag.into())];
        })
        .await;
    let code = w.svc.dataset("algorithms/hello.py", "print('hello')\n");
    let algorithm = w
        .publish(brizo::assets::publish::Asset::Algorithm(
            brizo::assets::publish::AlgorithmTerms {
                name: "hello".into(),
                file: code,
                image: name.clone(),
                tag: tag.into(),
                entrypoint: "python3 $ALGO".into(),
            },
        ))
        .await;
    let blocker = w
        .svc
        .submit(common::python_job("import time\ntime.sleep(600)"))
        .await;
    let consumer = w.consumer(3);
    let (terms, job) = order_and_start(&consumer, &dataset, algorithm, 0).await;
    consumer_sees(&w, &consumer, &terms, &job, 10).await;
    let review: Value = w
        .svc
        .get_json(&format!("/api/v2/jobs/{job}/algorithm"))
        .await;
    assert_eq!(review["imageDigest"], approved_id.as_str(), "{review}");
    let (status, answer) = post(&w, &format!("/api/v2/jobs/{job}/approve"), json!({})).await;
    assert_eq!(status, 200, "{answer}");

    // Someone re-tags the name to other content while the job waits for its slot.
    let other_id = build_image(&image, "swapped");
    assert_ne!(other_id, approved_id);
    let (status, answer) = post(&w, &format!("/api/v2/jobs/{blocker}/stop"), json!({})).await;
    assert!(status < 300, "{answer}");

    let deadline = Instant::now() + PATIENCE;
    let ended = loop {
        let record = w.svc.job(&job).await;
        if record["dateFinished"].is_number() {
            break record;
        }
        assert!(Instant::now() < deadline, "{record}\n{}", w.svc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ended["outcome"], "failed", "{ended}");
    let reason = ended["error"].as_str().unwrap();
    assert!(
        reason.contains("changed after the publisher approved it")
            && reason.contains(&approved_id)
            && reason.contains(&other_id),
        "{ended}"
    );
    // Nothing of it ran.
    assert!(!w.svc.logs(&job).await.contains("hello"));
    let _ = std::process::Command::new("/usr/bin/docker")
        .args(["rmi", "-f", &image, &approved_id])
        .output();
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
    let (terms, job) = order_and_start(&consumer, &dataset, algorithm, 10).await;
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

async fn reviewed(w: &World) -> (String, String) {
    let dataset = w.dataset(|t| t.review_outputs = true).await;
    (dataset, w.algorithm().await)
}

/// Waits until the job's outputs are held for review.
async fn held(w: &World, consumer: &Consumer, terms: &agreement::Terms, job: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = consumer_sees(w, consumer, terms, job, 50).await;
        if seen["waiting"]["reason"] == "review" {
            return seen;
        }
        assert!(Instant::now() < deadline, "never held: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn released_outputs_are_published_as_reviewed_and_paid() {
    let w = world().await;
    let (dataset, algorithm) = reviewed(&w).await;
    let consumer = w.consumer(3);
    let (terms, job) = order_and_start(&consumer, &dataset, algorithm, 0).await;
    let seen = held(&w, &consumer, &terms, &job).await;
    assert!(
        seen["statusText"].as_str().unwrap().contains("review"),
        "{seen}"
    );
    assert_eq!(seen["resultsUrls"], json!([]), "{seen}");
    // The publisher sees names, sizes, hashes and content.
    let listed: Value = w.svc.get_json(&format!("/api/v2/jobs/{job}/held")).await;
    assert_eq!(listed[0]["name"], "sum.txt", "{listed}");
    let content = w
        .svc
        .get(&format!("/api/v2/jobs/{job}/held/sum.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(content, "12");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"12"));
    assert_eq!(listed[0]["sha256"], sha.as_str());
    // Another name is not served, whatever it looks like.
    let res = w
        .svc
        .get(&format!("/api/v2/jobs/{job}/held/../../brizo.sqlite"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // Held, it stays held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.svc.job(&job).await["status"], 50);

    let listed_cli = cli(&w, &["held", &job]);
    assert!(
        listed_cli.contains(&sha) && listed_cli.contains("sum.txt"),
        "{listed_cli}"
    );
    assert_eq!(cli(&w, &["held", &job, "--show", "sum.txt"]), "12");
    let released = cli(&w, &["release", &job, "--by", "dana"]);
    assert!(released.contains("released"), "{released}");
    let done = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(done["settlement"]["state"], "paid", "{done}");
    let record = w.svc.job(&job).await;
    assert_eq!(record["outcome"], "succeeded", "{record}");
    assert_eq!(record["outputs"][0]["sha256"], sha.as_str(), "{record}");
    assert_eq!(record["release"]["state"], "approved");
    let receipt = w.svc.receipt(&job).await;
    assert_eq!(
        receipt["receipt"]["release"]["state"], "approved",
        "{receipt}"
    );
    assert_eq!(receipt["receipt"]["release"]["by"], "dana");
}

#[tokio::test]
async fn withheld_outputs_are_not_published_and_not_paid() {
    let w = world().await;
    let (dataset, algorithm) = reviewed(&w).await;
    let consumer = w.consumer(3);
    let (terms, job) = order_and_start(&consumer, &dataset, algorithm, 0).await;
    held(&w, &consumer, &terms, &job).await;
    let withheld = cli(
        &w,
        &["withhold", &job, "--reason", "the sum identifies a person"],
    );
    assert!(withheld.contains("withheld"), "{withheld}");
    let done = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(done["outcome"], "failed", "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("identifies a person"),
        "{done}"
    );
    assert_eq!(done["settlement"]["state"], "not_paid", "{done}");
    assert_eq!(done["resultsUrls"], json!([]));
    assert_eq!(compute_state(&w, &terms).await, ConditionState::Unfulfilled);
    // Nothing of it in the results store: no output, no log.
    let results = w.svc.data_dir().join("results").join(&job);
    let deadline = Instant::now() + PATIENCE;
    while w.svc.job(&job).await["receiptHash"].is_null() {
        assert!(Instant::now() < deadline, "no receipt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!results.join("outputs").exists());
    assert!(!results.join("logs").exists());
    // Decided once: a second decision is refused.
    let (status, _) = post(&w, &format!("/api/v2/jobs/{job}/release"), json!({})).await;
    assert_eq!(status, 409);
}

/// The algorithm's bytes are pinned at approval: the same DID serving other code by the time
/// the job stages fails the job with both hashes, and nothing runs.
#[tokio::test]
async fn an_algorithm_changed_after_approval_does_not_run() {
    // One run slot and two places ahead of the runs (max_running_jobs + max_staging_jobs),
    // all taken by the operator's own jobs, so that the approved job waits in line to stage
    // while its algorithm is swapped.
    let w = common::world::world_with(&[
        ("BRIZO_MAX_RUNNING_JOBS", "1"),
        ("BRIZO_MAX_STAGING_JOBS", "1"),
    ])
    .await;
    let (dataset, algorithm) = gated(&w).await;
    let sleeper = common::python_job("import time\ntime.sleep(600)");
    let running = w.svc.submit(sleeper.clone()).await;
    w.svc.wait_status(&running, 40, PATIENCE).await;
    let mut staged = vec![];
    for _ in 0..2 {
        let id = w.svc.submit(sleeper.clone()).await;
        w.svc.wait_status(&id, 30, PATIENCE).await;
        staged.push(id);
    }

    let consumer = w.consumer(3);
    let (terms, job) = order_and_start(&consumer, &dataset, algorithm, 0).await;
    consumer_sees(&w, &consumer, &terms, &job, 10).await;
    let (status, answer) = post(&w, &format!("/api/v2/jobs/{job}/approve"), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(w.svc.job(&job).await["status"], 10, "it waits in line");

    // The published algorithm's file now holds other code.
    let file = w.svc.dir.path().join("datasets/algorithms/sum.py");
    let approved = hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()));
    let swapped = "print('not what was reviewed')\n";
    w.svc.dataset("algorithms/sum.py", swapped);
    for blocker in staged.iter().chain([&running]) {
        let (status, answer) = post(&w, &format!("/api/v2/jobs/{blocker}/stop"), json!({})).await;
        assert!(status < 300, "{answer}");
    }
    let ended = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(ended["status"], 32, "{ended}");
    let record = w.svc.job(&job).await;
    let reason = record["error"].as_str().unwrap();
    let now = hex::encode(sha2::Sha256::digest(swapped.as_bytes()));
    assert!(
        reason.contains("changed after the publisher approved it")
            && reason.contains(&approved)
            && reason.contains(&now),
        "{record}"
    );
    assert!(!w.svc.logs(&job).await.contains("not what was reviewed"));
}
