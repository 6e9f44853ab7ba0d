//! Results only the consumer can read, end to end on the real parts (the service, Docker, and
//! for v1 anvil with the keeper contracts 0.13.2): what leaves the job is ciphertext, no
//! plaintext stays on the provider's disk, the receipt binds both digests, and the consumer
//! opens it, in Rust and from Python (eciespy + cryptography, following docs/encryption.md).

mod common;

use std::path::Path;
use std::process::Command;

use alloy::signers::local::PrivateKeySigner;
use brizo::seal::ContentKey;
use brizo::squid::Algorithm;
use common::world::{PATIENCE, world};
use common::{IMAGE, Service};
use reqwest::Method;
use serde_json::{Value, json};

fn public_hex(signer: &PrivateKeySigner) -> String {
    hex::encode(
        signer
            .credential()
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes(),
    )
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// The plaintext the algorithm writes: made in the container, so it is nowhere else.
fn expected_output() -> Vec<u8> {
    (0..200_000u32)
        .flat_map(|i| format!("{:08x}", i.wrapping_mul(2654435761)).into_bytes())
        .take(200_000 * 3)
        .collect()
}

const ALGORITHM: &str = "data = b''.join(b'%08x' % ((i * 2654435761) % 2**32) for i in range(200000))[:600000]\n\
open('/data/outputs/big.bin', 'wb').write(data)\n\
print('marker', (7 ** 77) % 10**30, flush=True)\n";
/// What the algorithm prints: computed in the container, in no file of the service's.
fn log_marker() -> String {
    let mut x = 1u128;
    for _ in 0..77 {
        x = x * 7 % 1_000_000_000_000_000_000_000_000_000_000;
    }
    format!("marker {x}")
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

#[tokio::test]
async fn an_encrypted_job_leaves_only_ciphertext_that_the_consumer_opens_in_rust_and_python() {
    let consumer = PrivateKeySigner::random();
    let svc = Service::start().await;
    let id = svc
        .submit(json!({"image": IMAGE, "entrypoint": "python3 $ALGO",
            "algorithm": {"rawcode": ALGORITHM}, "timeoutSeconds": 120,
            "encryptTo": public_hex(&consumer)}))
        .await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "succeeded", "{job}\n{}", svc.log());
    svc.wait_cleaned(&id).await;
    let expected = expected_output();
    assert_eq!(expected.len(), 600_000);

    let results = svc.data_dir().join("results").join(&id);
    let sealed_output = results.join("outputs/big.bin");
    let sealed_log = results.join("logs/algorithm.log");
    let key_file = results.join("key.ecies");
    let cipher = std::fs::read(&sealed_output).unwrap();
    assert!(cipher.starts_with(brizo::seal::MAGIC));
    assert_ne!(cipher, expected);

    // No plaintext anywhere under the service's data folder: not the output, not the log.
    let marker = log_marker();
    assert!(
        files_containing(svc.data_dir(), &expected[1000..1064]).is_empty(),
        "plaintext output on disk"
    );
    let leaked = files_containing(svc.data_dir(), marker.as_bytes());
    assert!(leaked.is_empty(), "plaintext log on disk: {leaked:?}");

    let sealed = Sealed {
        output: &sealed_output,
        log: &sealed_log,
        key: &key_file,
    };
    let receipt =
        receipt_binds_ciphertext_and_plaintext(&svc, &id, &consumer, &sealed, &cipher, &expected)
            .await;
    the_consumer_opens_it_in_rust(&consumer, &sealed, &receipt, &results, &expected, &marker);
    the_consumer_opens_it_in_python(&consumer, &sealed, &expected, &marker);
}

/// Where an encrypted job's results lie: the sealed output and log, and the content key
/// sealed to the consumer.
struct Sealed<'a> {
    output: &'a Path,
    log: &'a Path,
    key: &'a Path,
}

/// The receipt binds the ciphertext (anyone checks it) and the plaintext (the consumer).
async fn receipt_binds_ciphertext_and_plaintext(
    svc: &Service,
    id: &str,
    consumer: &PrivateKeySigner,
    sealed: &Sealed<'_>,
    cipher: &[u8],
    expected: &[u8],
) -> serde_json::Value {
    let receipt = svc.get_json(&format!("/api/v2/jobs/{id}/receipt")).await;
    let out = &receipt["receipt"]["outputs"][0];
    assert_eq!(out["sha256"], sha256(cipher));
    assert_eq!(out["plainSha256"], sha256(expected));
    assert_eq!(out["plainSize"], expected.len());
    let enc = &receipt["receipt"]["encryption"];
    assert_eq!(enc["recipient"], public_hex(consumer));
    assert_eq!(
        enc["keySha256"],
        sha256(&std::fs::read(sealed.key).unwrap())
    );
    assert_eq!(
        receipt["receipt"]["logs"]["sha256"],
        sha256(&std::fs::read(sealed.log).unwrap())
    );
    receipt
}

/// The consumer opens it in Rust, and `brizo proof verify` accepts the plaintext as the
/// consumer holds it; another key does not open it.
fn the_consumer_opens_it_in_rust(
    consumer: &PrivateKeySigner,
    sealed: &Sealed<'_>,
    receipt: &serde_json::Value,
    results: &Path,
    expected: &[u8],
    marker: &str,
) {
    let key =
        ContentKey::open(&std::fs::read(sealed.key).unwrap(), &consumer.to_bytes().0).unwrap();
    let opened = tempfile::tempdir().unwrap();
    key.decrypt_file(sealed.output, &opened.path().join("big.bin"))
        .unwrap();
    assert_eq!(
        std::fs::read(opened.path().join("big.bin")).unwrap(),
        expected
    );
    let log = key
        .decrypt_bytes(&std::fs::read(sealed.log).unwrap())
        .unwrap();
    assert!(String::from_utf8_lossy(&log).contains(marker));
    let signed: brizo::proof::receipt::SignedReceipt =
        serde_json::from_value(receipt.clone()).unwrap();
    brizo::proof::verify::check_outputs(&signed, opened.path()).unwrap();
    brizo::proof::verify::check_outputs(&signed, &results.join("outputs")).unwrap();
    let stranger = PrivateKeySigner::random();
    assert!(ContentKey::open(&std::fs::read(sealed.key).unwrap(), &stranger.to_bytes().0).is_err());
}

/// ...and from Python, with eciespy, from the documented format alone.
fn the_consumer_opens_it_in_python(
    consumer: &PrivateKeySigner,
    sealed: &Sealed<'_>,
    expected: &[u8],
    marker: &str,
) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/open_results.py");
    for (file, check) in [(sealed.output, true), (sealed.log, false)] {
        let out = Command::new("python3")
            .arg(&script)
            .arg(hex::encode(consumer.to_bytes()))
            .arg(sealed.key)
            .arg(file)
            .output()
            .expect("python3 (scripts/test-deps.sh installs eciespy)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if check {
            assert_eq!(out.stdout, expected);
        } else {
            assert!(String::from_utf8_lossy(&out.stdout).contains(marker));
        }
    }
}

#[tokio::test]
async fn a_key_that_is_not_a_curve_point_is_refused() {
    let svc = Service::start().await;
    let res = svc
        .post("/api/v2/jobs")
        .json(&json!({"image": IMAGE, "entrypoint": "python3 $ALGO",
            "algorithm": {"rawcode": "print(1)"}, "encryptTo": format!("04{}", "11".repeat(64))}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("encryptTo"),
        "{body}"
    );
}

#[tokio::test]
async fn a_dataset_that_encrypts_results_seals_them_to_the_key_that_signed_the_request() {
    let w = world().await;
    let dataset = w.dataset(|t| t.encrypt_results = true).await;
    let algorithm = w.algorithm().await;
    let consumer = w.consumer(3);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    // The consumer asks for nothing: the dataset's policy decides, and the key is the one
    // recovered from the signed start request.
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm))
        .await
        .unwrap();
    let status = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(status["settlement"]["state"], "paid", "{status}");
    let key_url = status["resultsKeyUrl"].as_str().unwrap();
    assert!(!key_url.is_empty(), "{status}");
    let sealed = consumer.download(key_url, &job).await.unwrap();
    let key = ContentKey::open(&sealed, &consumer.signer.to_bytes().0).unwrap();
    let url = status["resultsUrls"][0].as_str().unwrap();
    let cipher = consumer.download(url, &job).await.unwrap();
    assert_ne!(&cipher[..], b"12");
    assert_eq!(key.decrypt_bytes(&cipher).unwrap(), b"12");
    let log = consumer
        .download(status["algorithmLogUrl"].as_str().unwrap(), &job)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&key.decrypt_bytes(&log).unwrap()).contains("sum 12"),
        "the log opens to the algorithm's words"
    );
    let listed = consumer
        .call(Method::GET, terms.agreement_id, Some(&job))
        .await
        .unwrap();
    assert_eq!(listed[0]["resultsKeyUrl"], key_url);
}

/// The consumer's CLI end to end: order, start with `--encrypt`, follow, download: the files
/// land decrypted, and `brizo proof verify` accepts them against the receipt.
#[tokio::test]
async fn the_consumer_cli_asks_for_encryption_and_downloads_decrypted_results() {
    let w = world().await;
    let dataset = w.dataset(|_| {}).await;
    let algorithm = w.algorithm().await;
    let dir = tempfile::tempdir().unwrap();
    let brizo = env!("CARGO_BIN_EXE_brizo");
    let out = Command::new(brizo)
        .args([
            "consumer",
            "compute",
            "--dataset",
            &dataset,
            "--algorithm",
            &algorithm,
        ])
        .args([
            "--encrypt",
            "--server",
            &w.svc.base,
            "--keeper-url",
            &w.chain.url,
        ])
        .arg("--artifacts-dir")
        .arg(w.dir.path().join("artifacts"))
        .arg("--download")
        .arg(dir.path())
        .env("BRIZO_CONSUMER_KEY", brizo::chain::dev::DEV_KEYS[3])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("encrypted to this consumer"), "{stdout}");
    assert!(stdout.contains("| sum 12"), "the log, decrypted: {stdout}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("outputs/sum.txt")).unwrap(),
        "12"
    );
    let verified = Command::new(brizo)
        .args(["proof", "verify"])
        .arg(dir.path().join("receipt.json"))
        .arg("--outputs")
        .arg(dir.path().join("outputs"))
        .arg("--logs")
        .arg(dir.path().join("algorithm.log"))
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    let receipt: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("receipt.json")).unwrap()).unwrap();
    assert_eq!(receipt["receipt"]["encryption"]["scheme"], "brizo-seal-v1");
}
