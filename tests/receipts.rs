//! Proofs of computation for operator jobs (no chain): the receipt is issued, verifies with
//! `brizo proof verify`, and any change to it, to an output or to the log is named.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Service, python_job};
use serde_json::{Value, json};

fn verify(receipt: &Value, dir: &Path, extra: &[&str]) -> (bool, String) {
    let path = dir.join(format!("receipt-{}.json", rand::random::<u32>()));
    std::fs::write(&path, serde_json::to_string_pretty(receipt).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_brizo"))
        .args(["proof", "verify"])
        .arg(&path)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn a_receipt_verifies_and_every_change_is_named() {
    let svc = Service::start().await;
    let (id, signed) = a_finished_jobs_receipt(&svc).await;
    let dir = tempfile::tempdir().unwrap();
    let got = Downloaded::of(&svc, &id, dir.path()).await;
    let (ok, text) = verify(&signed, dir.path(), &got.args());
    assert!(ok, "{text}");
    assert!(
        text.contains("ok  hash") && text.contains("output(s)") && text.contains("the log matches"),
        "{text}"
    );
    a_changed_field_or_signature_is_named(&signed, dir.path());
    a_changed_output_or_log_is_named(&signed, dir.path(), &got);
}

/// A job that sums its input, run to the end: its id and its signed receipt, whose fields
/// are checked against what ran.
async fn a_finished_jobs_receipt(svc: &Service) -> (String, Value) {
    let data = svc.dataset("r/values.txt", "1 2 3\n");
    let mut body = python_job(
        "import pathlib\nv = pathlib.Path('/data/inputs/input/0').read_text().split()\nprint('n', len(v))\npathlib.Path('/data/outputs/out.txt').write_text(str(sum(map(int, v))))\n",
    );
    body["inputs"] = json!([{"url": data}]);
    let id = svc.submit(body).await;
    assert_eq!(
        svc.wait_finished(&id, Duration::from_secs(120)).await["outcome"],
        "succeeded"
    );
    let signed = svc.receipt(&id).await;
    let r = &signed["receipt"];
    assert_eq!(r["format"], "brizo-receipt/1");
    assert_eq!(r["jobId"], id.as_str());
    assert_eq!(r["outcome"], "succeeded");
    assert_eq!(r["exitCode"], 0);
    assert!(r["imageDigest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(r["inputs"][0]["sha256"], sha256(b"1 2 3\n").as_str());
    assert_eq!(r["inputs"][0]["size"], 6);
    assert_eq!(r["algorithm"]["raw"], true);
    assert_eq!(r["outputs"][0]["name"], "out.txt");
    assert_eq!(r["limits"]["memoryMb"], 512);
    assert_eq!(r["network"], false);
    assert!(signed["anchor"].is_null(), "no chain, no anchor");
    (id, signed)
}

/// What the verifier checks against: the outputs and the log as one would download them.
struct Downloaded {
    outputs: PathBuf,
    log: PathBuf,
    /// The one output's bytes, `out.txt`.
    out: bytes::Bytes,
}

impl Downloaded {
    async fn of(svc: &Service, id: &str, dir: &Path) -> Self {
        let outputs = dir.join("outputs");
        std::fs::create_dir(&outputs).unwrap();
        let out = svc
            .get(&format!("/api/v2/jobs/{id}/outputs/out.txt"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        std::fs::write(outputs.join("out.txt"), &out).unwrap();
        let log = dir.join("log.txt");
        std::fs::write(&log, svc.logs(id).await).unwrap();
        Self { outputs, log, out }
    }

    fn args(&self) -> [&str; 4] {
        [
            "--outputs",
            self.outputs.to_str().unwrap(),
            "--logs",
            self.log.to_str().unwrap(),
        ]
    }
}

/// Any change to a field breaks the hash; a re-hashed receipt signed by someone else, or a
/// signature that is not one, is named.
fn a_changed_field_or_signature_is_named(signed: &Value, dir: &Path) {
    for (pointer, value) in [
        ("/receipt/exitCode", json!(1)),
        ("/receipt/outcome", json!("failed")),
        ("/receipt/imageDigest", json!("sha256:00")),
        ("/receipt/outputs/0/sha256", json!("00")),
        ("/receipt/inputs/0/size", json!(7)),
    ] {
        let mut tampered = signed.clone();
        *tampered.pointer_mut(pointer).unwrap() = value;
        let (ok, text) = verify(&tampered, dir, &[]);
        assert!(!ok && text.contains("hash mismatch"), "{pointer}: {text}");
    }
    let mut resigned = signed.clone();
    resigned["receipt"]["exitCode"] = json!(1);
    let receipt: brizo::proof::receipt::Receipt =
        serde_json::from_value(resigned["receipt"].clone()).unwrap();
    let forged =
        brizo::proof::receipt::sign(receipt, &alloy::signers::local::PrivateKeySigner::random());
    let (ok, text) = verify(&serde_json::to_value(&forged).unwrap(), dir, &[]);
    assert!(!ok && text.contains("signature mismatch"), "{text}");
    let mut bad_signature = signed.clone();
    bad_signature["signature"] = json!(format!("0x{}", "11".repeat(65)));
    let (ok, text) = verify(&bad_signature, dir, &[]);
    assert!(!ok && text.contains("signature"), "{text}");
}

/// A changed output byte, a missing or an extra output, a changed log.
fn a_changed_output_or_log_is_named(signed: &Value, dir: &Path, got: &Downloaded) {
    let (outputs, args) = (&got.outputs, got.args());
    std::fs::write(outputs.join("out.txt"), b"7").unwrap();
    let (ok, text) = verify(signed, dir, &args);
    assert!(
        !ok && text.contains("output out.txt: sha256 differs"),
        "{text}"
    );
    std::fs::write(outputs.join("out.txt"), &got.out).unwrap();
    std::fs::write(outputs.join("extra.txt"), b"x").unwrap();
    let (ok, text) = verify(signed, dir, &args);
    assert!(
        !ok && text.contains("extra.txt is in the outputs folder but not in the receipt"),
        "{text}"
    );
    std::fs::remove_file(outputs.join("extra.txt")).unwrap();
    std::fs::remove_file(outputs.join("out.txt")).unwrap();
    let (ok, text) = verify(signed, dir, &args);
    assert!(!ok && text.contains("output out.txt is missing"), "{text}");
    std::fs::write(outputs.join("out.txt"), &got.out).unwrap();
    std::fs::write(&got.log, "forged log\n").unwrap();
    let (ok, text) = verify(signed, dir, &args);
    assert!(!ok && text.contains("logs differ"), "{text}");
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn rerun(svc: &Service, receipt: &Value, dir: &Path) -> (bool, String) {
    let path = dir.join(format!("receipt-{}.json", rand::random::<u32>()));
    std::fs::write(&path, serde_json::to_string(receipt).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_brizo"))
        .args(["job", "rerun"])
        .arg(&path)
        .args(["--server", &svc.base, "--token", common::TOKEN])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn a_rerun_reproduces_a_deterministic_job_and_flags_one_that_is_not() {
    let svc = Service::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = svc.dataset("rerun/values.txt", "4 5 6\n");
    let mut body = python_job(
        "import pathlib\nv = pathlib.Path('/data/inputs/input/0').read_text().split()\npathlib.Path('/data/outputs/sum.txt').write_text(str(sum(map(int, v))))\n",
    );
    body["inputs"] = json!([{"url": data}]);
    let id = svc.submit(body).await;
    svc.wait_finished(&id, Duration::from_secs(120)).await;
    let signed = svc.receipt(&id).await;
    let (ok, text) = rerun(&svc, &signed, dir.path());
    assert!(ok, "{text}");
    assert!(
        text.contains("same      image digest")
            && text.contains("same      output sum.txt")
            && text.contains("reproduces"),
        "{text}"
    );

    let random = svc
        .submit(python_job(
            "import os\nopen('/data/outputs/r.bin','wb').write(os.urandom(16))",
        ))
        .await;
    svc.wait_finished(&random, Duration::from_secs(120)).await;
    let signed = svc.receipt(&random).await;
    let (ok, text) = rerun(&svc, &signed, dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains("DIFFERENT output r.bin") && text.contains("does not reproduce"),
        "{text}"
    );
    // Reruns are ordinary jobs, pinned to the image digest that ran.
    let list: Vec<Value> = svc
        .get("/api/v2/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 4);
    assert!(
        list.iter()
            .filter(|j| j["image"].as_str().unwrap().starts_with("sha256:"))
            .count()
            == 2
    );
}
