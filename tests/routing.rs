//! Data locality: jobs run on the backend configured next to their data, the choice and its
//! reason recorded; a backend kind the build lacks is refused at start-up, naming its feature.
//! Two docker backends on the one local engine stand for two places (their containers carry
//! the backend's name as a label).

mod common;

use std::time::Duration;

use common::{Service, python_job};
use serde_json::{Value, json};

const TWO_BACKENDS: &str = r#"
backend = "local"
[[backends]]
name = "local"
kind = "docker"
[[backends]]
name = "near-census"
kind = "docker"
near = ["file://{data_dir}/datasets/census"]
"#;

fn containers_with(label: &str) -> usize {
    let out = std::process::Command::new("/usr/bin/docker")
        .args(["ps", "-q", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count()
}

#[tokio::test]
async fn jobs_run_next_to_their_data() {
    let svc = Service::start_with_config(&[], TWO_BACKENDS).await;
    let health: Value = svc
        .http
        .get(svc.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["backends"]["near-census"]["status"], "ok",
        "{health}"
    );
    assert_eq!(health["backends"]["local"]["kind"], "docker");

    let census = svc.dataset("census/2020.csv", "a\n1\n");
    let mut body = python_job("import time\ntime.sleep(1.5)\nprint('ran')");
    body["inputs"] = json!([{"url": census}]);
    let near = svc.submit(body).await;
    let job = svc.wait_status(&near, 40, Duration::from_secs(120)).await;
    assert_eq!(job["backend"], "near-census");
    assert!(
        job["backendReason"]
            .as_str()
            .unwrap()
            .contains("next to 1 of the job's 1 input(s)"),
        "{job}"
    );
    let instance = format!("brizo.instance={}", svc.instance());
    assert!(
        containers_with("brizo.backend=near-census") >= 1,
        "the job's container is not on the chosen backend"
    );
    assert!(containers_with(&instance) >= 1);

    let elsewhere = svc.submit(python_job("print('no data')")).await;
    let job = svc
        .wait_finished(&elsewhere, Duration::from_secs(120))
        .await;
    assert_eq!(job["backend"], "local");
    assert!(
        job["backendReason"].as_str().unwrap().contains("no inputs"),
        "{job}"
    );
    assert_eq!(
        svc.wait_finished(&near, Duration::from_secs(120)).await["outcome"],
        "succeeded"
    );
}

#[tokio::test]
async fn a_backend_this_build_lacks_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("brizo.toml");
    std::fs::write(&config, "[[backends]]\nname = \"local\"\nkind = \"docker\"\n[[backends]]\nname = \"eu\"\nkind = \"aws-batch\"\nnear = [\"s3://eu-data\"]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_brizo"))
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{}", common::free_port()),
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .env("BRIZO_ADMIN_TOKEN", common::TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Without the feature the kind is refused naming it; with it, its settings are required.
    #[cfg(not(feature = "aws"))]
    assert!(
        stderr.contains("\"eu\"") && stderr.contains("--features aws"),
        "{stderr}"
    );
    #[cfg(feature = "aws")]
    assert!(
        stderr.contains("\"eu\"") && stderr.contains("[backends.aws]"),
        "{stderr}"
    );

    std::fs::write(&config, "backend = \"missing\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_brizo"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BRIZO_ADMIN_TOKEN", common::TOKEN)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("default backend \"missing\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
