//! Every endpoint of the operator API and its errors, against a real service and Docker.

mod common;

use std::time::{Duration, Instant};

use common::{IMAGE, Service, python_job};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_job_runs_end_to_end_with_inputs_outputs_and_logs() {
    let svc = Service::start().await;
    let data = svc.dataset("numbers/values.txt", "3\n4\n5\n");
    let code = r#"
import json, os, pathlib
inputs = pathlib.Path(os.environ["INPUTS"])
values = [int(x) for x in (inputs / "numbers" / "0").read_text().split()]
print("dids", os.environ["DIDS"], "algo", os.environ["ALGO"], flush=True)
out = pathlib.Path(os.environ["OUTPUTS"])
(out / "sum.json").write_text(json.dumps({"sum": sum(values)}))
(out / "nested").mkdir()
(out / "nested" / "twice.txt").write_text(str(2 * sum(values)))
print("done", flush=True)
"#;
    let mut body = python_job(code);
    body["inputs"] = json!([{"url": data, "name": "numbers"}]);
    let id = svc.submit(body).await;
    assert_eq!(id.len(), 32);
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["status"], 70, "{job}");
    assert_eq!(job["statusText"], "Job finished");
    assert_eq!(
        job["outcome"],
        "succeeded",
        "{job}\n{}",
        svc.logs(&id).await
    );
    assert_eq!(job["exitCode"], 0);
    assert!(job["imageDigest"].as_str().unwrap().starts_with("sha256:"));
    assert!(job["dateFinished"].as_f64().unwrap() >= job["dateCreated"].as_f64().unwrap());

    let outputs = job["outputs"].as_array().unwrap();
    let names: Vec<&str> = outputs
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["nested/twice.txt", "sum.json"]);
    let sum = &outputs[1];
    assert_eq!(sum["size"], 11);
    assert_eq!(sum["sha256"], sha256_hex(br#"{"sum": 12}"#).as_str());

    let got = svc
        .get(&format!("/api/v2/jobs/{id}/outputs/sum.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), r#"{"sum": 12}"#);
    let nested = svc
        .get(&format!("/api/v2/jobs/{id}/outputs/nested/twice.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(nested.text().await.unwrap(), "24");

    let logs = svc.logs(&id).await;
    assert!(
        logs.contains(r#"dids ["numbers"] algo /data/transformations/algorithm"#),
        "{logs}"
    );
    assert!(logs.contains("done"));
    // Published under the results store too.
    let results = svc.data_dir().join("results").join(&id);
    assert_eq!(
        std::fs::read_to_string(results.join("outputs/sum.json")).unwrap(),
        r#"{"sum": 12}"#
    );
    assert!(
        std::fs::read_to_string(results.join("logs/algorithm.log"))
            .unwrap()
            .contains("done")
    );
    // The container and the job folder are gone; the results stay.
    svc.wait_cleaned(&id).await;
    assert!(common::containers_of(&svc.instance()).is_empty());
    assert!(!svc.data_dir().join("jobs").join(&id).exists());

    let list = svc.get_json("/api/v2/jobs").await;
    let list = list.as_array().unwrap();
    assert!(list.iter().any(|j| j["jobId"] == id.as_str()));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn logs_can_be_followed_while_the_job_runs() {
    let svc = Service::start().await;
    let id = svc.submit(python_job("import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n")).await;
    svc.wait_status(&id, 40, PATIENCE).await;
    let res = svc
        .get(&format!("/api/v2/jobs/{id}/logs?follow=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The response ends by itself when the job does, and holds every line.
    let text = tokio::time::timeout(PATIENCE, res.text())
        .await
        .expect("follow ends with the job")
        .unwrap();
    for i in 0..4 {
        assert!(text.contains(&format!("tick {i}")), "{text:?}");
    }
    assert_eq!(svc.job(&id).await["outcome"], "succeeded");
}

#[tokio::test]
async fn stop_kills_a_running_job_and_keeps_its_logs() {
    let svc = Service::start().await;
    let id = svc
        .submit(python_job(
            "import time\nprint('started', flush=True)\ntime.sleep(300)\n",
        ))
        .await;
    svc.wait_status(&id, 40, PATIENCE).await;
    // Stop once the algorithm has printed (running means the container started, not python).
    let deadline = std::time::Instant::now() + PATIENCE;
    while !svc.logs(&id).await.contains("started") {
        assert!(
            std::time::Instant::now() < deadline,
            "the algorithm never printed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = svc
        .post(&format!("/api/v2/jobs/{id}/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "stopped", "{job}");
    assert_eq!(job["stopRequested"], true);
    assert_eq!(job["error"], "stopped on request");
    assert!(svc.logs(&id).await.contains("started"));
    // A finished job cannot be stopped again.
    let again = svc
        .post(&format!("/api/v2/jobs/{id}/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert!(
        again.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("already finished")
    );
    svc.wait_cleaned(&id).await;
    assert!(common::containers_of(&svc.instance()).is_empty());
}

#[tokio::test]
async fn delete_removes_a_running_job_and_everything_it_left() {
    let svc = Service::start().await;
    let id = svc
        .submit(python_job("import time\ntime.sleep(300)\n"))
        .await;
    svc.wait_status(&id, 40, PATIENCE).await;
    let res = svc
        .delete(&format!("/api/v2/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        svc.get(&format!("/api/v2/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The engine stops the run and clears container, folder, log.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !common::containers_of(&svc.instance()).is_empty()
        || svc.data_dir().join("jobs").join(&id).exists()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "leftovers of a deleted job remain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !svc.data_dir()
            .join("logs")
            .join(format!("{id}.log"))
            .exists()
    );
    assert_eq!(
        svc.delete(&format!("/api/v2/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn delete_of_a_finished_job_removes_its_results() {
    let svc = Service::start().await;
    let id = svc
        .submit(python_job("open('/data/outputs/r.txt','w').write('x')"))
        .await;
    assert_eq!(
        svc.wait_finished(&id, PATIENCE).await["outcome"],
        "succeeded"
    );
    let results = svc.data_dir().join("results").join(&id);
    assert!(results.exists());
    assert_eq!(
        svc.delete(&format!("/api/v2/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // Gone at once from the API; its files go with the next turn of the reconcile loop.
    assert_eq!(
        svc.get(&format!("/api/v2/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    while results.exists()
        || svc
            .data_dir()
            .join("logs")
            .join(format!("{id}.log"))
            .exists()
        || svc
            .data_dir()
            .join("receipts")
            .join(format!("{id}.json"))
            .exists()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a removed job's files remain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = svc.get_json("/api/v2/jobs").await;
    let list = list.as_array().unwrap();
    assert!(!list.iter().any(|j| j["jobId"] == id.as_str()));
}

async fn expect_error(res: reqwest::Response, status: u16, needle: &str) {
    assert_eq!(res.status().as_u16(), status);
    let body: Value = res.json().await.expect("errors are JSON");
    let message = body["error"]
        .as_str()
        .expect("errors have an \"error\" string");
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// Sends `request` and checks it is refused as [`expect_error`] says.
async fn expect_refused(request: reqwest::RequestBuilder, status: u16, needle: &str) {
    expect_error(request.send().await.unwrap(), status, needle).await;
}

#[tokio::test]
async fn every_error_is_json_with_the_right_status() {
    let svc = Service::start().await;
    refused_without_the_token(&svc).await;
    refused_as_malformed_or_incomplete(&svc).await;
    // Nothing refused was recorded.
    let list = svc.get_json("/api/v2/jobs").await;
    let list = list.as_array().unwrap();
    assert!(list.is_empty(), "a refused request left a job: {list:?}");
    not_found(&svc).await;
}

/// 401: no token, wrong token.
async fn refused_without_the_token(svc: &Service) {
    let jobs = svc.url("/api/v2/jobs");
    expect_refused(svc.http.get(&jobs), 401, "missing operator token").await;
    expect_refused(
        svc.http.get(&jobs).bearer_auth("wrong"),
        401,
        "wrong operator token",
    )
    .await;
    expect_refused(svc.http.post(&jobs).json(&python_job("1")), 401, "token").await;
}

/// 400: malformed or incomplete bodies, values the service does not take.
async fn refused_as_malformed_or_incomplete(svc: &Service) {
    expect_refused(
        svc.post("/api/v2/jobs")
            .body("{not json")
            .header("content-type", "application/json"),
        400,
        "request body",
    )
    .await;
    expect_refused(
        svc.post("/api/v2/jobs").json(&json!({"image": IMAGE})),
        400,
        "missing field",
    )
    .await;
    let mut typo = python_job("1");
    typo["timeout"] = json!(5);
    expect_refused(svc.post("/api/v2/jobs").json(&typo), 400, "unknown field").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"image": "", "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": "1"}}),
            "image",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "  ", "algorithm": {"rawcode": "1"}}),
            "entrypoint is empty",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 'open", "algorithm": {"rawcode": "1"}}),
            "entrypoint",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {}}),
            "exactly one of rawcode or url",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": "1", "url": "https://example.com/a.py"}}),
            "exactly one",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"url": "http://127.0.0.1:9/a.py"}}),
            "loopback, private or link-local",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": "1"}, "timeoutSeconds": 0}),
            "timeoutSeconds",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": "1"}, "inputs": [{"url": "file:///etc/passwd"}]}),
            "dataset root",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": "1"}, "inputs": [{"url": "ftp://example.com/x"}]}),
            "not supported",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": "1"}, "inputs": [{"url": "http://169.254.169.254/latest"}]}),
            "link-local",
        ),
        (
            json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": "1"}, "inputs": [{"url": "https://example.com/x", "name": "../up"}]}),
            "name",
        ),
    ];
    for (body, needle) in cases {
        expect_refused(svc.post("/api/v2/jobs").json(&body), 400, needle).await;
    }
}

/// 404: unknown job, unknown output, unknown route.
async fn not_found(svc: &Service) {
    let unknown = "/api/v2/jobs/0123456789abcdef0123456789abcdef";
    for request in [
        svc.get(unknown),
        svc.get(&format!("{unknown}/logs")),
        svc.post(&format!("{unknown}/stop")),
        svc.delete(unknown),
    ] {
        expect_refused(request, 404, "no job").await;
    }
    expect_refused(svc.get("/api/v2/nothing-here"), 404, "no route").await;
    let id = svc.submit(python_job("print('hi')")).await;
    svc.wait_finished(&id, PATIENCE).await;
    expect_refused(
        svc.get(&format!("/api/v2/jobs/{id}/outputs/missing.txt")),
        404,
        "no published output",
    )
    .await;
    expect_refused(
        svc.get(&format!("/api/v2/jobs/{id}/outputs/../../etc/passwd")),
        404,
        "",
    )
    .await;
}

#[tokio::test]
async fn a_missing_image_fails_the_job_with_the_reason_and_keeps_it() {
    let svc = Service::start().await;
    let mut body = python_job("print(1)");
    body["image"] = json!("brizo-test/not-built-here:1");
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["status"], 32, "{job}");
    assert_eq!(job["statusText"], "Algorithm provisioning failed");
    assert_eq!(job["outcome"], "failed");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("brizo-test/not-built-here:1"),
        "{job}"
    );
}

/// A job that can never start ends at once with the reason, leaves no container, and a
/// followed log of it ends: a misspelt command, and an image reference the engine rejects.
#[tokio::test]
async fn a_job_that_can_never_start_ends_with_the_reason() {
    let svc = Service::start().await;
    let mut body = python_job("print(1)");
    body["entrypoint"] = json!("pyhton3 $ALGO");
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["status"], 32, "{job}");
    assert_eq!(job["outcome"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("pyhton3"), "{job}");
    assert!(job["exitCode"].is_null(), "{job}");
    let followed = tokio::time::timeout(
        PATIENCE,
        svc.get(&format!("/api/v2/jobs/{id}/logs?follow=true"))
            .send(),
    )
    .await
    .expect("following the log of a job that never started did not answer");
    tokio::time::timeout(PATIENCE, followed.unwrap().text())
        .await
        .expect("the followed log never ended")
        .unwrap();
    svc.wait_cleaned(&id).await;
    assert!(
        common::containers_of(&svc.instance()).is_empty(),
        "a container was left behind"
    );

    let mut body = python_job("print(1)");
    body["image"] = json!("brizo/Not-A-Valid:Reference");
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert!(matches!(job["status"].as_i64(), Some(32)), "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("brizo/Not-A-Valid:Reference"),
        "{job}"
    );
}

#[tokio::test]
async fn a_failing_algorithm_reports_its_exit_code() {
    let svc = Service::start().await;
    let id = svc
        .submit(python_job(
            "import sys\nprint('about to fail', flush=True)\nsys.exit(7)",
        ))
        .await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(
        (
            job["status"].as_i64(),
            job["outcome"].as_str(),
            job["exitCode"].as_i64()
        ),
        (Some(70), Some("failed"), Some(7))
    );
    assert_eq!(job["error"], "the algorithm exited with code 7");
    assert!(svc.logs(&id).await.contains("about to fail"));
}

#[tokio::test]
async fn outputs_over_the_cap_are_not_published() {
    let svc = Service::start_with(&[("BRIZO_OUTPUTS__MAX_OUTPUT_MB", "1")]).await;
    let id = svc
        .submit(python_job(
            "open('/data/outputs/big.bin','wb').write(b'x' * (2 << 20))",
        ))
        .await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "failed");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("over the publisher's cap"),
        "{job}"
    );
    assert_eq!(job["outputs"], json!([]));
    assert!(
        !svc.data_dir()
            .join("results")
            .join(&id)
            .join("outputs")
            .exists()
    );
}

#[tokio::test]
async fn symlinks_in_outputs_are_not_followed() {
    let svc = Service::start().await;
    let id = svc.submit(python_job("import os\nos.symlink('/etc/shadow', '/data/outputs/leak')\nopen('/data/outputs/ok.txt','w').write('ok')")).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "succeeded", "{job}");
    let names: Vec<&str> = job["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ok.txt"]);
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let svc = Service::start().await;
    health_names_the_backend(&svc).await;
    let id = svc.submit(python_job("print(1)")).await;
    svc.wait_finished(&id, PATIENCE).await;
    metrics_count_the_job_behind_the_token(&svc).await;
    openapi_lists_the_job_endpoints(&svc).await;
}

async fn health_names_the_backend(svc: &Service) {
    let health: Value = svc
        .http
        .get(svc.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["backend"]["name"], "docker");
    assert!(
        health["backends"]["local"]["capabilities"]["isolatesNetwork"]
            .as_bool()
            .unwrap(),
        "{health}"
    );
}

/// After one finished job: `/metrics` wants the token (its scheme in any case) and counts
/// the job, its phases and the request that submitted it.
async fn metrics_count_the_job_behind_the_token(svc: &Service) {
    assert_eq!(
        svc.http
            .get(svc.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "metrics without the token"
    );
    // The scheme is case-insensitive.
    let lower = svc
        .http
        .get(svc.url("/metrics"))
        .header("Authorization", format!("bearer {}", common::TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    let metrics = svc
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "brizo_jobs_finished_total{outcome=\"succeeded\"} 1",
        "brizo_job_phase_seconds_bucket{phase=\"running\"",
        "brizo_jobs_queued",
        "brizo_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v2/jobs\",status=\"201\"",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
}

/// The OpenAPI document lists the job endpoints, each with its 401, and a job's required
/// strings; the Swagger UI is served beside it.
async fn openapi_lists_the_job_endpoints(svc: &Service) {
    let spec: Value = svc
        .http
        .get(svc.url("/api/v2/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v2/jobs",
        "/api/v2/jobs/{id}",
        "/api/v2/jobs/{id}/logs",
        "/api/v2/jobs/{id}/outputs/{name}",
        "/api/v2/jobs/{id}/stop",
    ] {
        assert!(spec["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    // Every job endpoint says it answers 401 without the token; a job needs an image and a command.
    for (path, item) in spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with("/api/v2/jobs"))
    {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path} does not list 401"
            );
        }
    }
    let request = &spec["components"]["schemas"]["JobRequest"];
    assert_eq!(request["properties"]["image"]["minLength"], 1, "{request}");
    assert_eq!(
        request["properties"]["entrypoint"]["minLength"], 1,
        "{request}"
    );
    let docs = svc.http.get(svc.url("/api/v2/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"), "docs page");
}

/// A server that answers with a length it never sends: one byte a second, forever.
async fn trickling_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request first (a GET fits one read), then the answer that never ends.
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                    .await;
                for _ in 0..600 {
                    if socket.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    });
    addr
}

/// Staging has the job's time limit and obeys a stop: an input that trickles in never keeps a
/// job (or a staging slot) past either.
#[tokio::test]
async fn a_slow_input_ends_with_the_job_s_limit_or_a_stop() {
    let svc = Service::start_with(&[("BRIZO_INPUTS__ALLOW_PRIVATE_ADDRESSES", "true")]).await;
    let addr = trickling_server().await;
    let mut body = python_job("print('never')");
    body["inputs"] = json!([{"url": format!("http://{addr}/slow.csv"), "name": "slow"}]);
    body["timeoutSeconds"] = json!(3);
    let started = Instant::now();
    let id = svc.submit(body.clone()).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["status"], 31, "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("did not arrive within its 3 s limit"),
        "{job}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "staging outlived the job's limit by far"
    );

    body["timeoutSeconds"] = json!(600);
    let id = svc.submit(body).await;
    svc.wait_status(&id, 20, PATIENCE).await;
    let res = svc
        .post(&format!("/api/v2/jobs/{id}/stop"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let job = svc.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(job["outcome"], "stopped", "{job}");
}

/// Outputs deeper than a path can be end the job with the reason instead of holding it in
/// phase 50; its container and folder go.
#[tokio::test]
async fn outputs_that_cannot_be_listed_end_the_job() {
    let svc = Service::start().await;
    let code = "import os\nos.chdir('/data/outputs')\nfor _ in range(30):\n    os.mkdir('d' * 200)\n    os.chdir('d' * 200)\nopen('leaf.txt', 'w').write('x')\nprint('deep', flush=True)\n";
    let id = svc.submit(python_job(code)).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "failed", "{job}\n{}", svc.logs(&id).await);
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("could not be listed"),
        "{job}"
    );
    svc.wait_cleaned(&id).await;
    assert!(common::containers_of(&svc.instance()).is_empty());
    assert!(
        !svc.data_dir().join("jobs").join(&id).exists(),
        "the job's folder is still there"
    );
}

#[tokio::test]
async fn remote_inputs_and_algorithms_are_fetched_over_http() {
    // Loopback is refused by default; this publisher allows it so the test server is reachable.
    let svc = Service::start_with(&[
        ("BRIZO_INPUTS__ALLOW_PRIVATE_ADDRESSES", "true"),
        ("BRIZO_INPUTS__MAX_INPUT_MB", "1"),
    ])
    .await;
    let algorithm = b"import pathlib\nfor p in sorted(pathlib.Path('/data/inputs').rglob('*')):\n    print(p, p.read_text().strip() if p.is_file() else '', flush=True)\n".to_vec();
    let addr = common::http_files(vec![
        ("algo.py", algorithm),
        ("a.csv", b"alpha".to_vec()),
        ("b.csv", b"beta".to_vec()),
        ("big.bin", vec![b'x'; 2 << 20]),
    ])
    .await;
    let body = json!({"image": IMAGE, "entrypoint": "python3 $ALGO",
        "algorithm": {"url": format!("http://{addr}/algo.py")},
        "inputs": [{"url": format!("http://{addr}/a.csv"), "name": "remote"}, {"url": format!("http://{addr}/b.csv"), "name": "remote"}]});
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    let logs = svc.logs(&id).await;
    assert_eq!(job["outcome"], "succeeded", "{job}\n{logs}");
    assert!(
        logs.contains("/data/inputs/remote/0 alpha") && logs.contains("/data/inputs/remote/1 beta"),
        "{logs}"
    );

    // An input over the cap, and one that is not there: data provisioning fails, with the reason.
    for (file, needle) in [("big.bin", "larger than the limit"), ("absent.csv", "404")] {
        let mut body = python_job("print(1)");
        body["inputs"] = json!([{"url": format!("http://{addr}/{file}")}]);
        let id = svc.submit(body).await;
        let job = svc.wait_finished(&id, PATIENCE).await;
        assert_eq!(job["status"], 31, "{job}");
        assert_eq!(job["statusText"], "Data provisioning failed");
        assert!(job["error"].as_str().unwrap().contains(needle), "{job}");
    }
    // An algorithm that cannot be fetched: algorithm provisioning fails.
    let body = json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"url": format!("http://{addr}/missing.py")}});
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["status"], 32, "{job}");
}

#[tokio::test]
async fn an_unreachable_engine_gives_503_and_records_nothing() {
    // The service starts even when its engine is down (here: a socket nobody listens on).
    let socket = tempfile::tempdir().unwrap();
    let path = socket.path().join("docker.sock");
    let svc =
        Service::start_with_health(&[("BRIZO_DOCKER__SOCKET", path.to_str().unwrap())], 503).await;
    let health: Value = svc
        .http
        .get(svc.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
    assert!(
        health["backend"]["status"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{health}"
    );
    let res = svc
        .post("/api/v2/jobs")
        .json(&python_job("print(1)"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("try again later"),
        "{body}"
    );
    let list = svc.get_json("/api/v2/jobs").await;
    let list = list.as_array().unwrap();
    assert!(list.is_empty());
}

#[tokio::test]
async fn without_a_chain_the_metadata_store_takes_no_ddo() {
    use alloy::signers::SignerSync;
    let svc = Service::start().await;
    // A DDO with a valid proof: nothing says whom its DID belongs to, so it is not taken.
    let key = alloy::signers::local::PrivateKeySigner::random();
    let did = format!("did:op:{}", "ab".repeat(32));
    let signature = key.sign_message_sync(did.as_bytes()).unwrap().to_string();
    let ddo = json!({"id": did, "proof": {"type": "DDOIntegritySignature", "creator": key.address().to_string(), "signatureValue": signature}});
    let res = svc
        .http
        .post(svc.url("/api/v1/aquarius/assets/ddo"))
        .json(&ddo)
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, 503, "without a chain").await;
    expect_refused(
        svc.http
            .get(svc.url(&format!("/api/v1/aquarius/assets/ddo/{did}"))),
        404,
        "no DDO",
    )
    .await;

    // Job status, stop and delete of v1 say the same, signed as a Squid client signs them.
    let consumer = key.address().to_string();
    let agreement = format!("0x{}", "cd".repeat(32));
    let signature = key
        .sign_message_sync(format!("{consumer}{agreement}").as_bytes())
        .unwrap()
        .to_string();
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let res = svc
            .http
            .request(method.clone(), svc.url("/api/v1/brizo/services/compute"))
            .query(&[
                ("consumerAddress", consumer.as_str()),
                ("serviceAgreementId", agreement.as_str()),
                ("signature", signature.as_str()),
            ])
            .send()
            .await
            .unwrap();
        expect_error(res, 503, "without a chain").await;
    }
}

/// What a job writes is bounded while it runs, not only after: its writable folders are a
/// filesystem of their own, sized from the caps. Writing far past them gets "no space left"
/// from the kernel inside the container, and the job ends with that reason, though the
/// algorithm itself shrugs the error off and exits 0. The host's disk never sees the rest.
#[tokio::test]
async fn a_job_cannot_write_past_its_disk_while_it_runs() {
    if let Err(why) = brizo::jobs::disk::can_quota() {
        eprintln!("skipped: {why}");
        return;
    }
    let svc = Service::start_with(&[
        ("BRIZO_OUTPUTS__MAX_OUTPUT_MB", "2"),
        ("BRIZO_OUTPUTS__MAX_LOG_KB", "64"),
        ("BRIZO_LIMITS__DISK", "quota"),
    ])
    .await;
    let code = "import errno\nwritten = 0\ntry:\n    with open('/data/logs/flood.bin', 'wb') as f:\n        for _ in range(200):\n            f.write(b'x' * (1 << 20)); f.flush(); written += 1\nexcept OSError as e:\n    print('refused after', written, 'MiB:', errno.errorcode[e.errno], flush=True)\n";
    let id = svc.submit(python_job(code)).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    let logs = svc.logs(&id).await;
    assert!(logs.contains("ENOSPC"), "{logs}");
    let written: u64 = logs
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(written < 16, "wrote {written} MiB past a 2 MiB cap: {logs}");
    assert_eq!(job["outcome"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("filled its disk"),
        "{job}"
    );
    assert_eq!(job["outputs"], json!([]));
    // The disk is unmounted and the folder gone with the job.
    let folder = svc.data_dir().join("jobs").join(&id);
    let deadline = std::time::Instant::now() + PATIENCE;
    while folder.exists() {
        assert!(std::time::Instant::now() < deadline, "{folder:?} stays");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(id.as_str()), "{mounts}");
}

/// "Why is my job not running?": a job queued behind a full run slot says so, with its place.
#[tokio::test]
async fn a_queued_job_says_what_it_waits_for() {
    let svc = Service::start_with(&[("BRIZO_MAX_RUNNING_JOBS", "1")]).await;
    let first = svc.submit(python_job("import time\ntime.sleep(4)")).await;
    svc.wait_status(&first, 40, PATIENCE).await;
    let second = svc.submit(python_job("print('second')")).await;
    let job = svc.wait_status(&second, 30, PATIENCE).await;
    assert_eq!(job["waiting"]["reason"], "run_slot", "{job}");
    assert_eq!(job["waiting"]["position"], 1, "{job}");
    assert!(
        job["waiting"]["text"]
            .as_str()
            .unwrap()
            .contains("max_running_jobs"),
        "{job}"
    );
    assert!(svc.job(&first).await.get("waiting").is_none());
    let listed: Value = svc
        .get("/api/v2/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jobId"] == second.as_str())
        .unwrap();
    assert_eq!(row["waiting"]["reason"], "run_slot", "{row}");
    let done = svc.wait_finished(&second, PATIENCE).await;
    assert_eq!(done["outcome"], "succeeded");
    assert!(done.get("waiting").is_none(), "{done}");
}
