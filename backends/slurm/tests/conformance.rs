//! The backend conformance suite against a real one-node Slurm cluster (slurmctld, slurmd,
//! slurmrestd with JWT) that `scripts/slurm.sh` installs and starts, with the real static
//! runner in a container per job on the local Docker engine. Needs dockerd, the base image and
//! the runner: `make test` prepares all of them (scripts/test.sh).

use std::path::PathBuf;
use std::sync::OnceLock;

use brizo_backend_core::ComputeBackend;
use brizo_backend_remote::ImageSource;
use brizo_backend_slurm::{SlurmBackend, SlurmConfig};
use brizo_test_rigs::built_runner;
use brizo_test_rigs::slurm::Slurm;

const IMAGE: &str = "brizo/python:3.11-bookworm";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One cluster for the whole test binary (its watcher stops it when the binary ends).
async fn cluster() -> &'static Slurm {
    static CLUSTER: OnceLock<Slurm> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        CLUSTER.get_or_init(|| Slurm::start(&root()).unwrap_or_else(|e| panic!("{e}")))
    })
    .await
    .unwrap()
}

async fn backend() -> SlurmBackend {
    let cluster = cluster().await;
    let config = SlurmConfig {
        url: cluster.url.clone(),
        user: "root".into(),
        token: String::new(),
        token_file: Some(cluster.token_file.clone()),
        partition: String::new(),
        staging_dir: cluster.dir.join("staging"),
        // The suite's read-only mounts are temporary folders: on this one-node cluster they
        // are on the "shared" filesystem, so they are bound in, not copied.
        shared: vec![std::env::temp_dir()],
        runner_path: built_runner(&root())
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
            .to_string(),
        docker: "docker".into(),
        images: ImageSource::Docker,
        poll_ms: 200,
    };
    brizo_backend_slurm::connect(config, "conformance", "slurm").unwrap_or_else(|e| panic!("{e}"))
}

brizo_backend_core::conformance_tests!(backend().await, IMAGE);

/// Not part of the shared suite: a job cancelled outside brizo (an operator's `scancel`) ends,
/// and its container goes with it.
#[tokio::test]
async fn a_job_cancelled_outside_brizo_ends_and_its_container_goes() {
    let b = backend().await;
    let mut s =
        brizo_backend_core::conformance::spec(IMAGE, &["/bin/sh", "-c", "echo started; sleep 300"]);
    s.job_id = brizo_backend_core::conformance::unique_job_id("cancel");
    let run = b.start(&s).await.unwrap();
    // Wait until it runs, then cancel it as an operator would.
    let mut logs = b.logs(&s.job_id);
    let first = tokio::time::timeout(std::time::Duration::from_secs(60), futures_next(&mut logs))
        .await
        .expect("no output");
    assert!(first.contains("started"), "{first}");
    cluster().await.client("scancel", &[&run.run_id]).unwrap();
    let exit = tokio::time::timeout(std::time::Duration::from_secs(60), b.wait(&s.job_id))
        .await
        .expect("the cancelled job did not end")
        .unwrap();
    assert_ne!(exit.exit_code, 0);
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=brizo.job-id={}", s.job_id),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the job's container outlived the cancel"
    );
    b.remove(&s.job_id).await.unwrap();
}

async fn futures_next(
    stream: &mut futures::stream::BoxStream<
        'static,
        Result<bytes::Bytes, brizo_backend_core::BackendError>,
    >,
) -> String {
    use futures::StreamExt;
    String::from_utf8_lossy(&stream.next().await.expect("the log ended").unwrap()).into_owned()
}

/// Not part of the shared suite: a job whose node goes down ends (Slurm does not run it again
/// behind brizo's back), and its container goes. On a cluster of its own: the node is taken down.
#[tokio::test]
async fn a_job_whose_node_goes_down_ends_and_its_container_goes() {
    let own =
        tokio::task::spawn_blocking(|| Slurm::start(&root()).unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap();
    let config = SlurmConfig {
        url: own.url.clone(),
        user: "root".into(),
        token: String::new(),
        token_file: Some(own.token_file.clone()),
        partition: String::new(),
        staging_dir: own.dir.join("staging"),
        shared: vec![],
        runner_path: built_runner(&root())
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
            .to_string(),
        docker: "docker".into(),
        images: ImageSource::Docker,
        poll_ms: 200,
    };
    let b = brizo_backend_slurm::connect(config, "conformance", "slurm-node").unwrap();
    let mut s =
        brizo_backend_core::conformance::spec(IMAGE, &["/bin/sh", "-c", "echo started; sleep 300"]);
    s.job_id = brizo_backend_core::conformance::unique_job_id("node");
    b.start(&s).await.unwrap();
    let mut logs = b.logs(&s.job_id);
    let first = tokio::time::timeout(std::time::Duration::from_secs(60), futures_next(&mut logs))
        .await
        .expect("no output");
    assert!(first.contains("started"), "{first}");
    let node = own
        .client("sinfo", &["-h", "-o", "%N"])
        .unwrap()
        .trim()
        .to_string();
    own.client(
        "scontrol",
        &[
            "update",
            &format!("nodename={node}"),
            "state=down",
            "reason=brizo-test",
        ],
    )
    .unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(90), b.wait(&s.job_id))
        .await
        .expect("the job on a down node did not end");
    match ended {
        Ok(exit) => assert_ne!(exit.exit_code, 0),
        Err(brizo_backend_core::BackendError::RunFailed { .. }) => {}
        Err(e) => panic!("wait failed: {e}"),
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=brizo.job-id={}", s.job_id),
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job's container outlived its node"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let _ = own.client(
        "scontrol",
        &["update", &format!("nodename={node}"), "state=resume"],
    );
    b.remove(&s.job_id).await.unwrap();
}
