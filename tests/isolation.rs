//! What an algorithm can and cannot do inside a job, through the whole service (the backend
//! conformance suite checks the same at the backend level).

mod common;

use std::time::Duration;

use common::{Service, python_job};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn the_algorithm_is_confined() {
    let svc = Service::start().await;
    let data = svc.dataset("confined/data.csv", "a,b\n1,2\n");
    let code = r#"
import os, socket
def attempt(label, fn):
    try:
        fn(); print(label, "ALLOWED", flush=True)
    except Exception as e:
        print(label, "refused", type(e).__name__, flush=True)
print("uid", os.getuid(), "gid", os.getgid(), flush=True)
print("nets", sorted(os.listdir("/sys/class/net")), flush=True)
attempt("connect", lambda: socket.create_connection(("1.1.1.1", 53), timeout=3))
attempt("dns", lambda: socket.getaddrinfo("deb.debian.org", 80))
attempt("write-input", lambda: open("/data/inputs/confined/0", "a").write("x"))
attempt("new-input", lambda: open("/data/inputs/new", "w").write("x"))
attempt("write-algorithm", lambda: open("/data/transformations/algorithm", "a").write("x"))
attempt("write-rootfs", lambda: open("/etc/brizo-probe", "w").write("x"))
attempt("write-tmp", lambda: open("/tmp/probe", "w").write("x"))
attempt("write-outputs", lambda: open("/data/outputs/probe", "w").write("x"))
attempt("write-logs", lambda: open("/data/logs/probe", "w").write("x"))
print(open("/proc/self/status").read().split("CapEff:")[1].split()[0], "capeff", flush=True)
print("nnp", open("/proc/self/status").read().split("NoNewPrivs:")[1].split()[0], flush=True)
print("input", open("/data/inputs/confined/0").read().strip().replace("\n", "|"), flush=True)
print("env-has-token", any("TOKEN" in k for k in os.environ), flush=True)
"#;
    let mut body = python_job(code);
    body["inputs"] = json!([{"url": data, "name": "confined"}]);
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    let logs = svc.logs(&id).await;
    assert_eq!(job["outcome"], "succeeded", "{job}\n{logs}");
    for expected in [
        "uid 65534 gid 65534",
        "nets ['lo']",
        "connect refused",
        "dns refused",
        "write-input refused",
        "new-input refused",
        "write-algorithm refused",
        "write-rootfs refused",
        "write-tmp ALLOWED",
        "write-outputs ALLOWED",
        "write-logs ALLOWED",
        "0000000000000000 capeff",
        "nnp 1",
        "input a,b|1,2",
        "env-has-token False",
    ] {
        assert!(logs.contains(expected), "expected {expected:?} in:\n{logs}");
    }
}

#[tokio::test]
async fn memory_limit_ends_in_out_of_memory() {
    let svc = Service::start_with(&[("BRIZO_LIMITS__MEMORY_MB", "64")]).await;
    let id = svc
        .submit(python_job("x = bytearray(400 << 20)\nprint('survived')"))
        .await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "out_of_memory", "{job}");
    assert!(job["error"].as_str().unwrap().contains("64 MiB"), "{job}");
    assert!(!svc.logs(&id).await.contains("survived"));
}

#[tokio::test]
async fn timeout_kills_the_job() {
    let svc = Service::start().await;
    let mut body = python_job("import time\nprint('sleeping', flush=True)\ntime.sleep(600)");
    body["timeoutSeconds"] = json!(2);
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "timed_out", "{job}");
    assert_eq!(job["timeoutSeconds"], 2);
    assert!(
        job["error"].as_str().unwrap().contains("2 s limit"),
        "{job}"
    );
    assert!(svc.logs(&id).await.contains("sleeping"));
    svc.wait_cleaned(&id).await;
    assert!(common::containers_of(&svc.instance()).is_empty());
}

#[tokio::test]
async fn requested_timeouts_are_capped_by_the_publisher() {
    let svc = Service::start_with(&[
        ("BRIZO_LIMITS__MAX_TIMEOUT_SECS", "30"),
        ("BRIZO_LIMITS__DEFAULT_TIMEOUT_SECS", "20"),
    ])
    .await;
    let mut body = python_job("print(1)");
    body["timeoutSeconds"] = json!(86400);
    let id = svc.submit(body).await;
    assert_eq!(svc.job(&id).await["timeoutSeconds"], 30);
}

#[tokio::test]
async fn pids_limit_stops_fork_bombs() {
    let svc = Service::start_with(&[("BRIZO_LIMITS__PIDS", "20")]).await;
    let code = brizo_backend_core::conformance::PIDS_PROBE;
    let id = svc.submit(python_job(code)).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    let logs = svc.logs(&id).await;
    assert!(logs.contains("fork refused after"), "{job}\n{logs}");
}

#[tokio::test]
async fn images_outside_the_allowed_list_are_refused() {
    let svc = Service::start_with(&[("BRIZO_IMAGES__ALLOWED", r#"["brizo/python:*"]"#)]).await;
    let mut body = python_job("print(1)");
    body["image"] = json!("debian:bookworm");
    let res = svc.post("/api/v2/jobs").json(&body).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("not one this publisher supports")
    );
    svc.submit(python_job("print(1)")).await;
}
