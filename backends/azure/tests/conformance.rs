//! The backend conformance suite, and the Azure backend's own checks, against:
//! - REAL: Azurite (the Azure Blob emulator) for staging, SAS URLs the runner really uses, the
//!   inputs tasks fetch themselves and the outputs they send back; the local Docker engine
//!   running each task's container; the real static runner inside it.
//! - STAND-IN: Azure Batch (no emulator exists): `brizo_test_rigs::azure_batch`, a test server
//!   that speaks the Batch REST API, checks every request (credential, api-version, body)
//!   against the official specification's schemas, and runs tasks with `docker run`.
//! - REAL: azure_identity's `ManagedIdentityCredential`, unchanged, behind the backend's
//!   credential chain: Batch requests carry Microsoft Entra tokens it gets from the stand-in's
//!   App Service managed identity endpoint (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`; a STAND-IN
//!   for Entra, `brizo_test_rigs::entra`), whose tokens live just over azure_identity's refresh
//!   margin, so the suite runs across token refreshes. One test uses Shared Key instead.
//!
//! Needs dockerd, the base image, Azurite and the runner: `make test` prepares all of them.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use brizo_backend_azure::entra::{BATCH_SCOPE, REFRESH_BEFORE_EXPIRY};
use brizo_backend_azure::rest::{JobAdd, PoolInfo};
use brizo_backend_azure::{
    AzureBatch, AzureBatchBackend, AzureBatchConfig, BatchAuth, ImageSource,
};
use brizo_backend_core::conformance::{spec, unique_job_id};
use brizo_backend_core::{BackendError, ComputeBackend, Mount, RunState};
use brizo_test_rigs::azure_batch::{self, BatchStandin};
use brizo_test_rigs::azurite::{self, Azurite};
use brizo_test_rigs::entra;
use brizo_test_rigs::{built_runner, free_port};
use futures::StreamExt;
use sha2::Digest;

const IMAGE: &str = "brizo/python:3.11-bookworm";
const BATCH_JOB: &str = "brizo-conformance";
const STAGING: &str = "staging";
/// A container of the publisher's data, which tasks fetch from themselves.
const DATA: &str = "datasets";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Rig {
    azurite: Azurite,
    batch: BatchStandin,
}

/// How long the stand-in's tokens live: azure_identity and the backend replace a token
/// [`REFRESH_BEFORE_EXPIRY`] before it expires, so each is used for a few seconds.
fn token_lifetime() -> Duration {
    REFRESH_BEFORE_EXPIRY + Duration::from_secs(4)
}

/// One Azurite and one stand-in for the whole test binary (their watchers stop them when the
/// binary ends); tests use job ids of their own.
async fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        RIG.get_or_init(|| {
            let azurite = Azurite::start(&root(), free_port()).unwrap_or_else(|e| panic!("{e}"));
            azurite.create_container(STAGING).unwrap();
            azurite.create_container(DATA).unwrap();
            let batch = BatchStandin::start().unwrap_or_else(|e| panic!("{e}"));
            batch.issue_tokens_for(token_lifetime());
            // SAFETY: set once, before any backend of this binary reads the environment.
            unsafe {
                // Blob through the standard chain (object_store's from_env): the account key.
                std::env::set_var("AZURE_STORAGE_ACCOUNT_KEY", azurite::KEY);
                // Batch through the backend's chain: the managed identity of an App Service
                // (no service principal or workload identity in this environment).
                std::env::set_var("IDENTITY_ENDPOINT", batch.identity_endpoint());
                std::env::set_var("IDENTITY_HEADER", entra::IDENTITY_HEADER);
                for name in [
                    "AZURE_CLIENT_SECRET",
                    "AZURE_FEDERATED_TOKEN_FILE",
                    "AZURE_CLIENT_ID",
                ] {
                    std::env::remove_var(name);
                }
                // For the one Shared Key test.
                std::env::set_var("AZURE_BATCH_ACCESS_KEY", azure_batch::KEY);
            }
            Rig { azurite, batch }
        })
    })
    .await
    .unwrap()
}

/// The settings `terraform/modules/azure` would produce, pointed at Azurite and the stand-in.
fn config(rig: &Rig) -> AzureBatchConfig {
    AzureBatchConfig {
        batch_url: rig.batch.url.clone(),
        batch_account: azure_batch::ACCOUNT.into(),
        auth: BatchAuth::Entra,
        batch_key_env: "AZURE_BATCH_ACCESS_KEY".into(),
        entra_scope: BATCH_SCOPE.into(),
        pool_id: azure_batch::POOL.into(),
        job_id: BATCH_JOB.into(),
        storage_account: azurite::ACCOUNT.into(),
        staging_container: STAGING.into(),
        staging_prefix: "jobs".into(),
        blob_endpoint: rig.azurite.account_url(),
        runner_host_path: built_runner(&root())
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
            .to_string(),
        images: ImageSource::Docker,
        url_ttl_secs: 3600,
        retention_secs: 3600,
        poll_ms: 200,
    }
}

async fn backend_named(name: &str) -> AzureBatchBackend {
    let rig = rig().await;
    let backend = brizo_backend_azure::connect(config(rig), "conformance", name)
        .unwrap_or_else(|e| panic!("{e}"));
    // The Batch job Terraform makes, made here (Job_Add, checked against the spec too).
    backend
        .engine()
        .batch()
        .add_job(&JobAdd {
            id: BATCH_JOB.into(),
            pool_info: PoolInfo {
                pool_id: azure_batch::POOL.into(),
            },
        })
        .await
        .unwrap();
    backend
}

async fn backend() -> AzureBatchBackend {
    backend_named("azure").await
}

brizo_backend_core::conformance_tests!(backend().await, IMAGE);

/// Not part of the shared suite: which inputs a task may fetch itself.
#[tokio::test]
async fn fetches_blobs_of_its_account_but_never_the_staging_container() {
    let b = backend().await;
    let c = b.capabilities();
    assert!(c.can_fetch("az://devstoreaccount1/datasets/weather/daily.csv"));
    assert!(
        !c.can_fetch("az://devstoreaccount1/staging/jobs/any/plan.json"),
        "the staging container holds other jobs' URLs"
    );
    assert!(!c.can_fetch("az://otheraccount/datasets/weather/daily.csv"));
    assert!(!c.can_fetch("az://devstoreaccount1/datasets/weather/"));
    assert!(!c.can_fetch("s3://datasets/weather/daily.csv"));
    assert!(c.backstop && !c.isolates_network);
}

/// The shared checks of self-fetched inputs, on a blob in Azurite: the runner downloads it
/// through a read SAS for that one blob.
#[tokio::test]
async fn fetches_inputs_itself() {
    let b = backend().await;
    let rig = rig().await;
    let content = b"station,temp\nzurich,4.5\n";
    rig.azurite
        .put_blob(DATA, "weather/daily.csv", content)
        .unwrap();
    let sha = hex::encode(sha2::Sha256::digest(content));
    let url = format!("az://{}/{DATA}/weather/daily.csv", azurite::ACCOUNT);
    brizo_backend_core::conformance::fetches_inputs_itself(&b, IMAGE, &url, content, &sha).await;
    brizo_backend_core::conformance::missing_fetched_input_is_an_input_error(
        &b,
        IMAGE,
        &format!("az://{}/{DATA}/weather/none.csv", azurite::ACCOUNT),
    )
    .await;
}

/// What the client sends is what the specification defines, and the limits are on the task.
#[tokio::test]
async fn tasks_are_added_as_the_specification_defines_with_the_limits_mapped() {
    let b = backend().await;
    let rig = rig().await;
    let output = tempfile::tempdir().unwrap();
    let mut s = spec(IMAGE, &["/bin/sh", "-c", "echo hi > /out/x"]);
    s.mounts = vec![Mount {
        source: output.path().into(),
        target: "/out".into(),
        read_only: false,
    }];
    s.limits.memory_bytes = 256 << 20;
    s.limits.cpus = 1.5;
    s.limits.pids = 32;
    s.backstop_secs = Some(900);
    let run = b.start(&s).await.unwrap();
    let body = rig
        .batch
        .task_body(BATCH_JOB, &run.run_id)
        .expect("the stand-in has the task");
    assert_eq!(
        rig.batch.check("TaskAddParameter", &body),
        Vec::<String>::new(),
        "{body}"
    );
    assert_eq!(body["constraints"]["maxWallClockTime"], "PT900S", "{body}");
    assert_eq!(body["constraints"]["maxTaskRetryCount"], 0, "{body}");
    assert_eq!(body["commandLine"], brizo_runner::RUNNER_PATH, "{body}");
    let options = body["containerSettings"]["containerRunOptions"]
        .as_str()
        .unwrap();
    brizo_test_rigs::assert_isolating_options(options, &[":/opt/brizo/brizo-runner:ro"]);
    // The plan URL is a SAS for one blob, read only, expiring.
    let plan = body["environmentSettings"][0]["value"].as_str().unwrap();
    assert!(plan.contains("/staging/jobs/conformance/azure/"), "{plan}");
    for part in ["sp=r", "sr=b", "se=", "sig="] {
        assert!(plan.contains(part), "{part} not in the plan URL");
    }
    assert_eq!(b.wait(&s.job_id).await.unwrap().exit_code, 0);
    b.collect(&s.job_id).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(output.path().join("x")).unwrap(),
        "hi\n"
    );
    b.remove(&s.job_id).await.unwrap();
    assert!(
        rig.batch.task_body(BATCH_JOB, &run.run_id).is_none(),
        "remove left the task in the Batch job"
    );
    assert!(
        rig.batch.violations().is_empty(),
        "requests the specification refuses: {:?}",
        rig.batch.violations()
    );
}

/// A request the specification refuses is refused by the stand-in (the check can fail).
#[tokio::test]
async fn the_stand_in_refuses_what_the_specification_refuses() {
    let rig = rig().await;
    let mut body = serde_json::json!({"id": "t", "commandLine": "x",
        "containerSettings": {"imageName": "i", "workingDirectory": "somewhere"}});
    assert!(!rig.batch.check("TaskAddParameter", &body).is_empty());
    body["containerSettings"]["workingDirectory"] = "containerImageDefault".into();
    assert!(rig.batch.check("TaskAddParameter", &body).is_empty());
    body["limits"] = serde_json::json!({});
    assert!(!rig.batch.check("TaskAddParameter", &body).is_empty());
}

/// A service restarted after submitting, before it wrote down the task (a crash between the
/// two), finds the task by the id derived from the job id instead of adding a second one; a
/// service restarted later re-attaches from what it wrote down.
#[tokio::test]
async fn a_restarted_service_reattaches_to_its_task() {
    let rig = rig().await;
    let first = backend_named("restart").await;
    let s = spec(
        IMAGE,
        &["/bin/sh", "-c", "echo started; sleep 3; echo done"],
    );
    let run = first.start(&s).await.unwrap();
    drop(first);
    // The crash: meta.json never written.
    let meta = format!("jobs/conformance/restart/{}/meta.json", s.job_id);
    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(azurite::ACCOUNT)
        .with_access_key(azurite::KEY)
        .with_container_name(STAGING)
        .with_endpoint(rig.azurite.account_url())
        .with_allow_http(true)
        .build()
        .unwrap();
    object_store::ObjectStoreExt::delete(&store, &meta.as_str().into())
        .await
        .unwrap();
    let second = backend_named("restart").await;
    assert_eq!(second.state(&s.job_id).await.unwrap(), RunState::NotFound);
    let again = second.start(&s).await.unwrap();
    assert_eq!(again.run_id, run.run_id);
    assert_eq!(
        rig.batch.task_adds(&run.run_id),
        1,
        "the restarted service added the task again"
    );
    let third = backend_named("restart").await;
    let exit = tokio::time::timeout(Duration::from_secs(60), third.wait(&s.job_id))
        .await
        .expect("the task did not end")
        .unwrap();
    assert_eq!(exit.exit_code, 0);
    let mut logs = String::new();
    let mut stream = third.logs(&s.job_id);
    while let Some(chunk) = stream.next().await {
        logs.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(logs.contains("started") && logs.contains("done"), "{logs}");
    third.remove(&s.job_id).await.unwrap();
    assert_eq!(
        AzureBatch::task_id("conformance/restart", &s.job_id),
        run.run_id
    );
}

/// Outputs over the publisher's cap never travel back: the runner refuses to send them.
#[tokio::test]
async fn outputs_over_the_cap_are_not_sent_back() {
    let b = backend().await;
    let output = tempfile::tempdir().unwrap();
    let mut s = spec(
        IMAGE,
        &[
            "python3",
            "-c",
            "open('/out/big.bin', 'wb').write(b'x' * 8192)",
        ],
    );
    s.mounts = vec![Mount {
        source: output.path().into(),
        target: "/out".into(),
        read_only: false,
    }];
    s.limits.output_bytes = 1024;
    s.job_id = unique_job_id("cap");
    b.start(&s).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), b.wait(&s.job_id))
        .await
        .expect("the task did not end")
        .unwrap();
    assert_ne!(exit.exit_code, 0);
    let mut logs = String::new();
    let mut stream = b.logs(&s.job_id);
    while let Some(chunk) = stream.next().await {
        logs.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        logs.contains("over the publisher's cap of 1024 bytes"),
        "{logs}"
    );
    let _ = b.collect(&s.job_id).await;
    assert!(!output.path().join("big.bin").exists());
    b.remove(&s.job_id).await.unwrap();
}

/// Batch throttling (429) is a transient error (the engine retries it), and the retry succeeds.
/// On a stand-in of its own: throttling the shared one would fail the other tests.
#[tokio::test]
async fn throttling_is_transient() {
    let rig = rig().await;
    let own =
        tokio::task::spawn_blocking(|| BatchStandin::start().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap();
    let mut c = config(rig);
    c.batch_url = own.url.clone();
    let b = brizo_backend_azure::connect(c, "conformance", "throttled").unwrap();
    own.add_job(BATCH_JOB);
    b.ping().await.unwrap();
    own.throttle(1);
    match b.ping().await {
        Err(e) => {
            assert_eq!(e.class(), brizo_backend_core::ErrorClass::Transient, "{e}");
            assert!(e.to_string().contains("429"), "{e}");
        }
        Ok(()) => panic!("a throttled request passed"),
    }
    b.ping().await.unwrap();
}

/// A Batch job or pool that does not exist (or a job on another pool) makes the backend unavailable (a transient error), with
/// what to do about it.
#[tokio::test]
async fn a_missing_batch_job_or_pool_is_reported_by_ping() {
    // The configured Batch job exists (as Terraform makes it) whichever test runs first: the
    // pool checks below are about the pool, not about a job missing too.
    let _ = backend().await;
    let rig = rig().await;
    let mut c = config(rig);
    c.job_id = "no-such-batch-job".into();
    let b = brizo_backend_azure::connect(c, "conformance", "ping").unwrap();
    match b.ping().await {
        Err(e @ BackendError::Unavailable { .. }) => {
            assert!(e.to_string().contains("terraform/modules/azure"), "{e}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // A job submitted meanwhile waits (a transient error), it is not failed as a bad job.
    let s = spec(IMAGE, &["/bin/true"]);
    match b.start(&s).await {
        Err(e @ BackendError::Unavailable { .. }) => {
            assert!(e.to_string().contains("no-such-batch-job"), "{e}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    b.remove(&s.job_id).await.unwrap();

    // A job on another pool than the configured one, and a pool that does not exist.
    let mut c = config(rig);
    c.pool_id = "no-such-pool".into();
    let b = brizo_backend_azure::connect(c, "conformance", "ping").unwrap();
    match b.ping().await {
        Err(e @ BackendError::Unavailable { .. }) => {
            assert!(e.to_string().contains("not on the configured pool"), "{e}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    b.engine()
        .batch()
        .add_job(&JobAdd {
            id: "on-a-missing-pool".into(),
            pool_info: PoolInfo {
                pool_id: "no-such-pool".into(),
            },
        })
        .await
        .unwrap();
    let mut c = config(rig);
    c.pool_id = "no-such-pool".into();
    c.job_id = "on-a-missing-pool".into();
    let b = brizo_backend_azure::connect(c, "conformance", "ping").unwrap();
    match b.ping().await {
        Err(e @ BackendError::Unavailable { .. }) => {
            assert!(
                e.to_string().contains("pool no-such-pool does not exist"),
                "{e}"
            )
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// A backend on a stand-in of its own (which takes the tokens of the shared one's tenant), so
/// that what it is told does not touch the other tests.
async fn own_standin(name: &str) -> (BatchStandin, AzureBatchBackend) {
    let rig = rig().await;
    let own =
        tokio::task::spawn_blocking(|| BatchStandin::start().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap();
    own.add_job(BATCH_JOB);
    let mut c = config(rig);
    c.batch_url = own.url.clone();
    let b = brizo_backend_azure::connect(c, "conformance", name).unwrap();
    (own, b)
}

/// The distinct bearer tokens a stand-in saw, in the order it first saw them.
fn bearer_tokens(standin: &BatchStandin) -> Vec<String> {
    let mut tokens: Vec<String> = vec![];
    for credential in standin.credentials() {
        let token = credential
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("a request without a bearer token: {credential}"))
            .to_string();
        if !tokens.contains(&token) {
            tokens.push(token);
        }
    }
    tokens
}

/// Every request carries a Microsoft Entra token from the managed identity (through
/// azure_identity); one token serves many requests, and it is replaced before it expires.
#[tokio::test]
async fn entra_tokens_are_cached_and_replaced_before_they_expire() {
    let (own, b) = own_standin("tokens").await;
    for _ in 0..3 {
        b.ping().await.unwrap();
    }
    let first = bearer_tokens(&own);
    assert_eq!(first.len(), 1, "one token for six requests: {first:?}");
    assert!(own.credentials().len() >= 6, "{:?}", own.operations());
    // Past the point where the token has less than the refresh margin left.
    tokio::time::sleep(token_lifetime() - REFRESH_BEFORE_EXPIRY + Duration::from_secs(1)).await;
    b.ping().await.unwrap();
    let now = bearer_tokens(&own);
    assert_eq!(now.len(), 2, "the token was not replaced: {now:?}");
    assert_eq!(now[0], first[0]);
    for token in &now {
        entra::check(token, entra::BATCH_RESOURCE).unwrap();
    }
    assert!(own.violations().is_empty(), "{:?}", own.violations());
}

/// A token Batch refuses (expired, or of an identity it does not know) makes the backend
/// unavailable (jobs wait) with Batch's reason and what to check.
#[tokio::test]
async fn a_refused_entra_token_says_why_and_what_to_do() {
    let (own, b) = own_standin("refused").await;
    own.refuse_tokens_as_expired();
    match b.ping().await {
        Err(e @ BackendError::Unavailable { .. }) => {
            let words = e.to_string();
            for part in [
                "401",
                "AuthenticationFailed",
                "The access token expiry UTC time is earlier than current UTC time",
                "the managed identity at IDENTITY_ENDPOINT",
                "Azure Batch Job Submitter",
                BATCH_SCOPE,
            ] {
                assert!(words.contains(part), "{part:?} not in: {words}");
            }
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// `auth = "shared_key"` still runs jobs: every request signed with the account key (the
/// stand-in refuses a wrong signature), no token asked for.
#[tokio::test]
async fn shared_key_runs_a_job() {
    let rig = rig().await;
    let own =
        tokio::task::spawn_blocking(|| BatchStandin::start().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap();
    own.add_job(BATCH_JOB);
    let mut c = config(rig);
    c.batch_url = own.url.clone();
    c.auth = BatchAuth::SharedKey;
    let b = brizo_backend_azure::connect(c, "conformance", "shared-key").unwrap();
    let s = spec(IMAGE, &["/bin/sh", "-c", "echo signed"]);
    b.start(&s).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), b.wait(&s.job_id))
        .await
        .expect("the task did not end")
        .unwrap();
    assert_eq!(exit.exit_code, 0);
    b.remove(&s.job_id).await.unwrap();
    let credentials = own.credentials();
    assert!(!credentials.is_empty());
    assert!(
        credentials.iter().all(|c| c == "SharedKey"),
        "{credentials:?}"
    );
    assert!(own.violations().is_empty(), "{:?}", own.violations());

    // Without the key in its variable, connecting says what to do.
    let mut c = config(rig);
    c.auth = BatchAuth::SharedKey;
    c.batch_key_env = "BRIZO_TEST_NO_SUCH_KEY_VARIABLE".into();
    match brizo_backend_azure::connect(c, "conformance", "no-key") {
        Err(e) => assert!(
            e.to_string().contains("$BRIZO_TEST_NO_SUCH_KEY_VARIABLE")
                && e.to_string().contains("auth = \"entra\""),
            "{e}"
        ),
        Ok(_) => panic!("connected without the key"),
    }
}
