//! The backend's Azure credential chain when the managed identity fails, in a test binary of
//! its own (the chain reads this process's environment):
//! - REAL: azure_identity's `ManagedIdentityCredential` and `AzureCliCredential` (through its
//!   `DeveloperToolsCredential`), unchanged.
//! - STAND-IN: the App Service managed identity endpoint (`brizo_test_rigs::entra`, served by
//!   the stand-in Batch server), told the wrong `IDENTITY_HEADER` so that it refuses; an `az`
//!   script on PATH printing what `az account get-access-token` prints; Azure Batch itself.
//!
//! No Azurite, no Docker: only `ping` talks to Batch.

use brizo_backend_azure::entra::BATCH_SCOPE;
use brizo_backend_azure::rest::Auth;
use brizo_backend_azure::{AzureBatchConfig, BatchAuth, ImageSource};
use brizo_backend_core::{BackendError, ComputeBackend};
use brizo_test_rigs::azure_batch::{self, BatchStandin};
use brizo_test_rigs::entra;

const BATCH_JOB: &str = "brizo-chain";

fn config(standin: &BatchStandin) -> AzureBatchConfig {
    AzureBatchConfig {
        batch_url: standin.url.clone(),
        batch_account: azure_batch::ACCOUNT.into(),
        auth: BatchAuth::Entra,
        batch_key_env: "AZURE_BATCH_ACCESS_KEY".into(),
        entra_scope: BATCH_SCOPE.into(),
        pool_id: azure_batch::POOL.into(),
        job_id: BATCH_JOB.into(),
        storage_account: "devstoreaccount1".into(),
        staging_container: "staging".into(),
        staging_prefix: "jobs".into(),
        // Blob is never reached here (no job runs); object_store needs an account URL.
        blob_endpoint: "http://127.0.0.1:9/devstoreaccount1".into(),
        runner_host_path: "/opt/brizo/brizo-runner".into(),
        images: ImageSource::Docker,
        url_ttl_secs: 3600,
        retention_secs: 3600,
        poll_ms: 200,
    }
}

/// One test, in steps: the environment is the process's.
#[tokio::test]
async fn a_failing_chain_says_what_to_do_and_the_azure_cli_is_its_fallback() {
    let standin =
        tokio::task::spawn_blocking(|| BatchStandin::start().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap();
    standin.add_job(BATCH_JOB);
    let bin = tempfile::tempdir().unwrap();
    a_chain_that_fails(&standin, bin.path());
    let b = brizo_backend_azure::connect(config(&standin), "chain", "failing").unwrap();
    assert_says_what_to_do(b.ping().await);
    assert!(
        standin.credentials().is_empty(),
        "a request went to Batch without a token"
    );

    // Signed in to the Azure CLI: the chain falls back to it and keeps it.
    let (token, expires) =
        entra::issue(entra::BATCH_RESOURCE, std::time::Duration::from_secs(3600));
    entra::write_az(bin.path(), &token, expires).unwrap();
    let b = brizo_backend_azure::connect(config(&standin), "chain", "cli").unwrap();
    b.ping().await.unwrap();
    b.ping().await.unwrap();
    let seen = standin.credentials();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        seen.iter().all(|c| *c == format!("Bearer {token}")),
        "{seen:?}"
    );
    let Auth::Entra(tokens) = b.engine().batch().auth() else {
        panic!("not Entra")
    };
    assert_eq!(
        tokens.chain().chosen(),
        Some("the Azure CLI or Azure Developer CLI sign-in")
    );
    assert_eq!(
        tokens.chain().sources(),
        vec![
            "the managed identity at IDENTITY_ENDPOINT",
            "the Azure CLI or Azure Developer CLI sign-in"
        ]
    );
    assert!(
        standin.violations().is_empty(),
        "{:?}",
        standin.violations()
    );
}

/// This process's environment as one where every source of the chain fails: the managed
/// identity endpoint is told the wrong header, nobody signed in to the Azure CLI (an `az` on
/// PATH, in `bin`, that says so), no service principal or workload identity is set.
fn a_chain_that_fails(standin: &BatchStandin, bin: &std::path::Path) {
    // SAFETY: the one test of this binary, before any backend reads the environment.
    unsafe {
        std::env::set_var("AZURE_STORAGE_ACCOUNT_KEY", "a2V5");
        std::env::set_var("IDENTITY_ENDPOINT", standin.identity_endpoint());
        std::env::set_var("IDENTITY_HEADER", "not-the-header-of-this-environment");
        for name in [
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_CLIENT_ID",
        ] {
            std::env::remove_var(name);
        }
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", bin.display()));
    }

    // Nobody signed in to the Azure CLI, and the managed identity endpoint refuses.
    let az = bin.join("az");
    std::fs::write(
        &az,
        "#!/bin/sh\necho \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The refusal of a chain in which every source failed names each source, what it answered
/// and what the publisher can do.
fn assert_says_what_to_do(ping: Result<(), BackendError>) {
    match ping {
        Err(e @ BackendError::Unavailable { .. }) => {
            let words = e.to_string();
            for part in [
                "no Azure credential gave brizo a Microsoft Entra token for Azure Batch",
                BATCH_SCOPE,
                // Each source, and what it answered.
                "the managed identity at IDENTITY_ENDPOINT",
                "X-IDENTITY-HEADER is missing or is not this environment's IDENTITY_HEADER",
                "the Azure CLI or Azure Developer CLI sign-in",
                "Please run 'az login'",
                // What to do.
                "managed identity",
                "AZURE_CLIENT_SECRET",
                "auth = \"shared_key\"",
            ] {
                assert!(words.contains(part), "{part:?} not in: {words}");
            }
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}
