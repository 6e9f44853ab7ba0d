//! Inputs, algorithms and results on S3, through object_store, against a real S3 server
//! (moto, started here and stopped by PID). `scripts/test-deps.sh` installs moto.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{python_job, Service};
use object_store::aws::AmazonS3Builder;
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
            assert!(Instant::now() < deadline, "moto_server did not come up on {endpoint}");
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
        let res = reqwest::Client::new().put(format!("{}/{name}", self.endpoint)).send().await.unwrap();
        assert!(res.status().is_success(), "create bucket: {}", res.status());
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_bucket_name(name)
                .with_access_key_id("testing")
                .with_secret_access_key("testing")
                .with_region("us-east-1")
                .build()
                .unwrap(),
        )
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
    data.put(&"census/part-0.csv".into(), PutPayload::from_static(b"city,people\nOslo,709000\n")).await.unwrap();
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
    assert_eq!(job["outcome"], "succeeded", "{job}\n{}", svc.logs(&id).await);
    assert!(svc.logs(&id).await.contains("rows 1"));

    // Published to S3, and served back through the API from there.
    let stored = results.get(&format!("brizo/{id}/outputs/count.txt").into()).await.unwrap().bytes().await.unwrap();
    assert_eq!(&stored[..], b"1");
    let log = results.get(&format!("brizo/{id}/logs/algorithm.log").into()).await.unwrap().bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&log).contains("rows 1"));
    let served = svc.get(&format!("/api/v2/jobs/{id}/outputs/count.txt")).send().await.unwrap().text().await.unwrap();
    assert_eq!(served, "1");

    // Deleting the job deletes its results there too.
    assert_eq!(svc.delete(&format!("/api/v2/jobs/{id}")).send().await.unwrap().status(), 204);
    assert!(results.get(&format!("brizo/{id}/outputs/count.txt").into()).await.is_err());

    // A missing object fails data provisioning with the reason.
    let mut body = python_job("print(1)");
    body["inputs"] = json!([{"url": "s3://datasets/census/absent.csv"}]);
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], 31, "{job}");
    assert!(job["error"].as_str().unwrap().contains("s3://datasets/census/absent.csv"), "{job}");
}
