//! Starts a real `brizo serve` (the binary cargo built) against the real Docker engine, on a
//! free port with its own data folder, and stops it by PID when dropped.
//! Needs dockerd and the base image: `scripts/dockerd.sh start && scripts/base-image.sh`
//! (`make test` does both).
#![allow(dead_code)]

pub mod weather;
pub mod world;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const IMAGE: &str = "brizo/python:3.11-bookworm";
pub const TOKEN: &str = "test-operator-token-0123456789";

pub struct Service {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub child: Option<Child>,
    extra_env: Vec<(String, String)>,
    port: u16,
    ready_health: u16,
    pub http: reqwest::Client,
}

impl Service {
    pub async fn start() -> Service {
        Self::start_with(&[]).await
    }

    /// `env`: extra BRIZO_* settings, e.g. `("BRIZO_MAX_RUNNING_JOBS", "2")`.
    pub async fn start_with(env: &[(&str, &str)]) -> Service {
        Self::start_with_health(env, 200).await
    }

    /// Like `start_with`, but ready once /health answers `health` (503 for a degraded start).
    pub async fn start_with_health(env: &[(&str, &str)], health: u16) -> Service {
        Self::start_full(env, health, None).await
    }

    /// With a config file (`{data_dir}` in it becomes the service's data folder).
    pub async fn start_with_config(env: &[(&str, &str)], toml: &str) -> Service {
        Self::start_full(env, 200, Some(toml)).await
    }

    async fn start_full(env: &[(&str, &str)], health: u16, toml: Option<&str>) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("datasets")).unwrap();
        let port = free_port();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(toml) = toml {
            let path = dir.path().join("brizo.toml");
            std::fs::write(
                &path,
                toml.replace("{data_dir}", &dir.path().to_string_lossy()),
            )
            .unwrap();
            env.push(("BRIZO_CONFIG".into(), path.to_string_lossy().into_owned()));
        }
        let mut service = Service {
            dir,
            base: format!("http://127.0.0.1:{port}"),
            child: None,
            extra_env: env,
            port,
            // Idle connections are dropped before actix's keep-alive (5 s) would close them under
            // a request: a test that pauses (a restart, a blocking command) gets a fresh one.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            ready_health: health,
        };
        service.spawn().await;
        service
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (again) the service process on the same port and data folder.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("service.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_brizo"));
        cmd.args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{}", self.port),
            "--data-dir",
        ])
        .arg(self.dir.path())
        .env("BRIZO_ADMIN_TOKEN", TOKEN)
        .env("BRIZO_RECONCILE_INTERVAL_MS", "200")
        .env("BRIZO_LOG", "info,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn brizo");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The instance check makes sure the answer comes from this process, not from another
            // test's service that happens to hold the port.
            if let Ok(r) = self.http.get(format!("{}/health", self.base)).send().await
                && r.status().as_u16() == self.ready_health
            {
                let body: Value = r.json().await.unwrap_or_default();
                assert_eq!(
                    body["instance"],
                    self.instance(),
                    "another service answers on port {}",
                    self.port
                );
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("brizo serve exited with {status}; its log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "brizo serve did not become healthy; is dockerd running? log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// Sets (or, with `None`, removes) an environment variable for the next `spawn`.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.extra_env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.extra_env.push((key.to_string(), value.to_string()));
        }
    }

    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    pub fn instance(&self) -> String {
        // Mirrors Config: the first 6 bytes of sha256(data dir), hex.
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.dir.path().to_string_lossy().as_bytes());
        hex::encode(&digest[..6])
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(TOKEN)
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(TOKEN)
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(TOKEN)
    }

    /// Submits and returns the job id, failing the test on anything but 201.
    pub async fn submit(&self, body: Value) -> String {
        let res = self.post("/api/v2/jobs").json(&body).send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, 201, "submit answered {status}: {text}");
        serde_json::from_str::<Value>(&text).unwrap()["jobId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The JSON an operator's GET of `path` answers.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get_json(&format!("/api/v2/jobs/{id}")).await
    }

    /// Polls until the job reaches a terminal status (31, 32 or 70).
    pub async fn wait_finished(&self, id: &str, patience: Duration) -> Value {
        self.poll_finished(id, patience, Duration::from_millis(100))
            .await
    }

    /// `wait_finished` polling every `every` (benchmarks poll fast, to measure the service).
    pub async fn poll_finished(&self, id: &str, patience: Duration, every: Duration) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let job = self.job(id).await;
            if matches!(job["status"].as_i64(), Some(31 | 32 | 70)) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not finish in {patience:?}: {job}\nservice log:\n{}",
                self.log()
            );
            tokio::time::sleep(every).await;
        }
    }

    /// The job's receipt (`GET /api/v2/jobs/{id}/receipt`), once the job has one: it is
    /// signed after the job's last status, a moment later.
    pub async fn receipt(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.job(id).await;
            if job["receiptHash"].is_string() {
                return self.get_json(&format!("/api/v2/jobs/{id}/receipt")).await;
            }
            assert!(
                Instant::now() < deadline,
                "no receipt for {id}: {job}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a finished job's container and folder are gone (its `cleanupMs` timing is
    /// recorded then): cleanup follows the job's last status by a moment.
    pub async fn wait_cleaned(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.job(id).await;
            if job["timings"].get("cleanupMs").is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} was never cleaned up: {job}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: i64, patience: Duration) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let job = self.job(id).await;
            if job["status"].as_i64() == Some(status) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never reached status {status}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A dataset file under the service's dataset root, readable by the algorithm's uid.
    pub fn dataset(&self, rel: &str, content: &str) -> String {
        let path = self.dir.path().join("datasets").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        make_readable(self.dir.path());
        format!("file://{}", path.display())
    }

    pub async fn logs(&self, id: &str) -> String {
        self.get(&format!("/api/v2/jobs/{id}/logs"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Containers this test's service left (there should be none) go with it.
        let _ = Command::new("/usr/bin/docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=brizo.instance={}", self.instance()),
            ])
            .output()
            .map(|out| {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("/usr/bin/docker")
                        .args(["rm", "-f", id])
                        .output();
                }
            });
        // And the job disks still mounted in its data folder (a test that ends while a job runs).
        brizo::jobs::disk::detach_all_under(self.dir.path());
    }
}

/// Every folder from the temp dir down must be traversable by the algorithm's uid.
pub fn make_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(dir) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                if p.file_name()
                    .is_some_and(|n| n == "jobs" || n == "logs" || n == "results")
                {
                    continue;
                }
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A port nobody listens on, never handed out twice in this test process: the kernel may give
/// a released port to the next `bind(0)`, and two services of parallel tests would then share it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A python job: `code` runs as the algorithm.
pub fn python_job(code: &str) -> Value {
    json!({"image": IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": code}, "timeoutSeconds": 120})
}

/// Containers on the engine labelled with this service's instance.
pub fn containers_of(instance: &str) -> Vec<String> {
    let out = Command::new("/usr/bin/docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=brizo.instance={instance}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// A minimal HTTP/1.1 file server on loopback, the remote data source of http(s) inputs:
/// `GET /<name>` answers `files[name]`, anything else 404.
pub async fn http_files(files: Vec<(&'static str, Vec<u8>)>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files = std::sync::Arc::new(files);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_string();
                let response = match files.iter().find(|(name, _)| *name == path) {
                    Some((_, body)) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = sock.write_all(&response).await;
            });
        }
    });
    addr
}

/// A client of one bucket on a moto server (its S3 accepts any credentials; path-style).
pub fn moto_bucket(endpoint: &str, name: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(name)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_region("us-east-1")
        .build()
        .unwrap()
}

/// The bytes of the object at `path` in `store` (a results or staging bucket a test reads
/// back); panics when it is not there.
pub async fn stored(store: &dyn object_store::ObjectStore, path: &str) -> bytes::Bytes {
    use object_store::ObjectStoreExt as _;
    store
        .get(&path.into())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .bytes()
        .await
        .unwrap()
}
