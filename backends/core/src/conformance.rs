//! The behaviour every [`ComputeBackend`] must show, as plain async functions.
//!
//! A backend crate runs them all against its real engine with [`conformance_tests!`] (cargo
//! feature `conformance`, for dev-dependencies only). The fixture image must provide `/bin/sh`
//! and `python3`. Each check cleans up the runs it made. Checks of optional abilities read
//! [`ComputeBackend::capabilities`] and say on stderr when they do not apply.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use crate::{BackendError, ComputeBackend, JobSpec, Limits, Mount, RemoteFile, RunState};

/// The uid:gid conformance runs use: not root, and not the uid of whoever runs the tests.
pub const NOBODY: &str = "65534:65534";
/// Bound on every wait, so that a broken backend fails the suite instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh job id per call: suites may run in parallel against one engine.
pub fn unique_job_id(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{:x}{:x}{:x}",
        std::process::id(),
        nanos & 0xffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A spec with the secure defaults the engine uses, running `argv` in `image`.
pub fn spec(image: &str, argv: &[&str]) -> JobSpec {
    JobSpec {
        job_id: unique_job_id("conf"),
        image: image.to_string(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        mounts: vec![],
        fetch: vec![],
        working_dir: None,
        user: NOBODY.to_string(),
        network: false,
        limits: Limits::default(),
        backstop_secs: Some(PATIENCE.as_secs() * 5),
    }
}

/// A job that runs `script` with `/bin/sh -c` in `image` (for a backend's own tests too).
pub fn sh(image: &str, script: &str) -> JobSpec {
    spec(image, &["/bin/sh", "-c", script])
}

async fn run_to_end(b: &dyn ComputeBackend, spec: &JobSpec) -> (i64, bool, String) {
    b.start(spec)
        .await
        .unwrap_or_else(|e| panic!("start failed: {e}"));
    let exit = tokio::time::timeout(PATIENCE, b.wait(&spec.job_id))
        .await
        .expect("run did not end in time")
        .unwrap_or_else(|e| panic!("wait failed: {e}"));
    b.collect(&spec.job_id)
        .await
        .unwrap_or_else(|e| panic!("collect failed: {e}"));
    let logs = collect_logs(b, &spec.job_id).await;
    b.remove(&spec.job_id).await.expect("remove failed");
    (exit.exit_code, exit.oom_killed, logs)
}

async fn collect_logs(b: &dyn ComputeBackend, job_id: &str) -> String {
    let mut out = Vec::new();
    let mut stream = b.logs(job_id);
    while let Some(chunk) = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("logs did not end")
    {
        out.extend_from_slice(&chunk.expect("log stream failed"));
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

pub async fn reports_exit_code(b: &dyn ComputeBackend, image: &str) {
    let (code, oom, _) = run_to_end(b, &sh(image, "exit 3")).await;
    assert_eq!((code, oom), (3, false));
    let (code, _, _) = run_to_end(b, &sh(image, "true")).await;
    assert_eq!(code, 0);
}

pub async fn streams_stdout_and_stderr(b: &dyn ComputeBackend, image: &str) {
    let (_, _, logs) = run_to_end(
        b,
        &sh(
            image,
            "echo to-stdout; echo to-stderr >&2; sleep 0.3; echo after-a-pause",
        ),
    )
    .await;
    for needle in ["to-stdout", "to-stderr", "after-a-pause"] {
        assert!(logs.contains(needle), "logs lack {needle:?}: {logs:?}");
    }
}

pub async fn passes_environment(b: &dyn ComputeBackend, image: &str) {
    let mut s = sh(image, "echo \"value=$BRIZO_CONFORMANCE\"");
    s.env.push(("BRIZO_CONFORMANCE".into(), "forty two".into()));
    let (_, _, logs) = run_to_end(b, &s).await;
    assert!(logs.contains("value=forty two"), "{logs:?}");
}

pub async fn start_is_idempotent(b: &dyn ComputeBackend, image: &str) {
    let s = sh(image, "sleep 30");
    let first = b.start(&s).await.unwrap();
    let second = b.start(&s).await.unwrap();
    assert_eq!(
        first.run_id, second.run_id,
        "a second start must reuse the run"
    );
    assert!(
        first.image_digest.starts_with("sha256:"),
        "image digest {:?}",
        first.image_digest
    );
    let runs = b.list_runs().await.unwrap();
    assert_eq!(
        runs.iter().filter(|id| **id == s.job_id).count(),
        1,
        "{runs:?}"
    );
    b.stop(&s.job_id).await.unwrap();
    b.remove(&s.job_id).await.unwrap();
}

pub async fn stop_kills_a_running_run(b: &dyn ComputeBackend, image: &str) {
    let s = sh(image, "echo running; sleep 300");
    b.start(&s).await.unwrap();
    assert_eq!(b.state(&s.job_id).await.unwrap(), RunState::Running);
    // Running for real (a remote engine may hold a run in its queue first), as its log shows,
    // where the engine shows logs while a run lasts (moto's CloudWatch only has them at the end).
    let mut logs = b.logs(&s.job_id);
    let printed = match tokio::time::timeout(Duration::from_secs(20), logs.next()).await {
        Ok(Some(Ok(chunk))) => String::from_utf8_lossy(&chunk).contains("running"),
        _ => {
            eprintln!(
                "{}: no log before the stop; the run may still have been queued",
                b.name()
            );
            false
        }
    };
    b.stop(&s.job_id).await.unwrap();
    match tokio::time::timeout(PATIENCE, b.wait(&s.job_id))
        .await
        .expect("stop did not end the run")
    {
        Ok(exit) => {
            assert_ne!(exit.exit_code, 0);
            assert!(!exit.oom_killed);
        }
        Err(BackendError::RunFailed { .. }) if !printed => {}
        Err(e) => panic!("wait failed: {e}"),
    }
    // Stopping what already ended is not an error.
    b.stop(&s.job_id).await.unwrap();
    b.remove(&s.job_id).await.unwrap();
}

/// A run stopped before it started (still queued, or being set up) ends too: as never started
/// (`RunFailed`, no work done), or with a failing exit.
pub async fn stop_ends_a_run_that_has_not_started(b: &dyn ComputeBackend, image: &str) {
    let s = sh(image, "sleep 300");
    b.start(&s).await.unwrap();
    b.stop(&s.job_id).await.unwrap();
    match tokio::time::timeout(PATIENCE, b.wait(&s.job_id))
        .await
        .expect("stop did not end the run")
    {
        Ok(exit) => assert_ne!(exit.exit_code, 0),
        Err(BackendError::RunFailed { .. }) => {}
        Err(e) => panic!("wait failed: {e}"),
    }
    b.remove(&s.job_id).await.unwrap();
}

pub async fn remove_leaves_nothing(b: &dyn ComputeBackend, image: &str) {
    let s = sh(image, "true");
    b.start(&s).await.unwrap();
    b.wait(&s.job_id).await.unwrap();
    b.remove(&s.job_id).await.unwrap();
    assert_eq!(b.state(&s.job_id).await.unwrap(), RunState::NotFound);
    assert!(!b.list_runs().await.unwrap().contains(&s.job_id));
    b.remove(&s.job_id)
        .await
        .expect("a second remove is not an error");
    assert!(matches!(
        b.wait(&s.job_id).await,
        Err(BackendError::NotFound { .. })
    ));
}

pub async fn missing_image_is_reported(b: &dyn ComputeBackend, _image: &str) {
    let s = sh("brizo-conformance/no-such-image:never", "true");
    match b.start(&s).await {
        Err(BackendError::ImageNotFound { image }) => assert!(image.contains("no-such-image")),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert_eq!(b.state(&s.job_id).await.unwrap(), RunState::NotFound);
}

/// Inputs are readable and cannot be changed; the output mount is writable and what the run
/// writes there appears on the host.
pub async fn mounts_honour_read_only(b: &dyn ComputeBackend, image: &str) {
    let input = shared_dir();
    std::fs::write(input.path().join("data.txt"), "input-bytes").unwrap();
    std::fs::set_permissions(
        input.path().join("data.txt"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let output = shared_dir();
    let mut s = sh(
        image,
        "cat /in/data.txt; \
         if echo x > /in/data.txt 2>/dev/null || touch /in/new 2>/dev/null; then echo INPUT-WRITABLE; fi; \
         echo result > /out/result.txt",
    );
    s.mounts = vec![
        Mount {
            source: input.path().into(),
            target: "/in".into(),
            read_only: true,
        },
        Mount {
            source: output.path().into(),
            target: "/out".into(),
            read_only: false,
        },
    ];
    let (code, _, logs) = run_to_end(b, &s).await;
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("input-bytes"), "{logs:?}");
    assert!(
        !logs.contains("INPUT-WRITABLE"),
        "a read-only mount was writable"
    );
    assert_eq!(
        std::fs::read_to_string(input.path().join("data.txt")).unwrap(),
        "input-bytes"
    );
    assert_eq!(
        std::fs::read_to_string(output.path().join("result.txt")).unwrap(),
        "result\n"
    );
}

pub async fn isolation_defaults(b: &dyn ComputeBackend, image: &str) {
    let script = "echo uid=$(id -u); \
        echo nets=$(ls /sys/class/net | tr '\\n' ' '); \
        grep CapEff /proc/self/status; \
        if touch /rootfs-probe 2>/dev/null; then echo ROOTFS-WRITABLE; fi; \
        touch /tmp/ok && echo tmp-writable";
    let (code, _, logs) = run_to_end(b, &sh(image, script)).await;
    assert_eq!(code, 0, "{logs}");
    assert!(
        logs.contains("uid=65534"),
        "not running as the requested uid: {logs}"
    );
    if b.capabilities().isolates_network {
        assert!(
            logs.contains("nets=lo \n") || logs.contains("nets=lo\n"),
            "network interfaces besides loopback: {logs}"
        );
    } else {
        eprintln!(
            "{}: network isolation is the infrastructure's, not checked here",
            b.name()
        );
    }
    assert!(
        logs.contains("0000000000000000"),
        "capabilities not dropped: {logs}"
    );
    assert!(
        !logs.contains("ROOTFS-WRITABLE"),
        "root filesystem is writable"
    );
    assert!(
        logs.contains("tmp-writable"),
        "/tmp is not writable: {logs}"
    );
}

pub async fn enforces_pids_limit(b: &dyn ComputeBackend, image: &str) {
    let mut s = spec(image, &["python3", "-c", PIDS_PROBE]);
    s.limits.pids = 16;
    let (code, _, logs) = run_to_end(b, &s).await;
    assert!(
        logs.contains("fork refused after"),
        "pids limit not enforced: {logs}"
    );
    assert_eq!(code, 0, "{logs}");
}

/// Forks until refused; prints "fork refused after N" when a pids limit stops it.
pub const PIDS_PROBE: &str = r#"
import os, sys, time
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(20); os._exit(0)
        n += 1
except OSError:
    print("fork refused after", n); sys.stdout.flush(); os._exit(0)
print("no limit:", n); sys.stdout.flush(); os._exit(1)
"#;

pub async fn reports_out_of_memory(b: &dyn ComputeBackend, image: &str) {
    let mut s = spec(
        image,
        &[
            "python3",
            "-c",
            "x = bytearray(512 << 20); print('allocated', len(x))",
        ],
    );
    s.limits.memory_bytes = 64 << 20;
    let (code, oom, logs) = run_to_end(b, &s).await;
    assert!(
        oom,
        "memory limit not reported as OOM (exit {code}): {logs}"
    );
    assert_ne!(code, 0);
    assert!(!logs.contains("allocated"));
}

/// A run survives its observer: logs and exit are still there on a second look.
pub async fn second_look_after_exit(b: &dyn ComputeBackend, image: &str) {
    let s = sh(image, "echo once; exit 5");
    b.start(&s).await.unwrap();
    let first = b.wait(&s.job_id).await.unwrap();
    let again = b.wait(&s.job_id).await.unwrap();
    assert_eq!(first, again);
    assert!(matches!(b.state(&s.job_id).await.unwrap(), RunState::Exited(e) if e.exit_code == 5));
    assert!(collect_logs(b, &s.job_id).await.contains("once"));
    assert!(collect_logs(b, &s.job_id).await.contains("once"));
    b.remove(&s.job_id).await.unwrap();
}

/// Collecting is a step of its own and can be repeated: the outputs are in place after the
/// first call and the same after a second.
pub async fn collect_is_repeatable(b: &dyn ComputeBackend, image: &str) {
    let output = shared_dir();
    let mut s = sh(
        image,
        "echo once > /out/a.txt; mkdir /out/sub; echo twice > /out/sub/b.txt",
    );
    s.mounts = vec![Mount {
        source: output.path().into(),
        target: "/out".into(),
        read_only: false,
    }];
    b.start(&s).await.unwrap();
    assert_eq!(
        tokio::time::timeout(PATIENCE, b.wait(&s.job_id))
            .await
            .expect("run did not end")
            .unwrap()
            .exit_code,
        0
    );
    let first = b.collect(&s.job_id).await.unwrap();
    let second = b.collect(&s.job_id).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        std::fs::read_to_string(output.path().join("a.txt")).unwrap(),
        "once\n"
    );
    assert_eq!(
        std::fs::read_to_string(output.path().join("sub/b.txt")).unwrap(),
        "twice\n"
    );
    b.remove(&s.job_id).await.unwrap();
}

/// A run on a backend whose engine honours [`JobSpec::backstop_secs`] ends by itself when the
/// engine never stops it (the service was lost). Engines round the backstop up to their own
/// minimum (a minute on AWS Batch and Slurm), so this check takes that long.
pub async fn backstop_ends_a_lost_run(b: &dyn ComputeBackend, image: &str) {
    if !b.capabilities().backstop {
        eprintln!(
            "{}: no backstop of its own (the engine's deadline is the only one); not checked",
            b.name()
        );
        return;
    }
    let mut s = sh(image, "echo started; sleep 900");
    s.backstop_secs = Some(1);
    b.start(&s).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(240), b.wait(&s.job_id))
        .await
        .expect("the backstop did not end the run");
    match ended {
        Ok(exit) => assert_ne!(
            exit.exit_code, 0,
            "a run cut off by its backstop did not succeed"
        ),
        Err(BackendError::RunFailed { .. }) => {}
        Err(e) => panic!("wait failed: {e}"),
    }
    b.remove(&s.job_id).await.unwrap();
}

/// For a backend that fetches inputs itself: `url` (which the backend can fetch, holding
/// `content`) reaches the run read-only at its target, and [`ComputeBackend::collect`] reports
/// the size and sha256 of what the run saw. `sha256` is the hex digest of `content`.
pub async fn fetches_inputs_itself(
    b: &dyn ComputeBackend,
    image: &str,
    url: &str,
    content: &[u8],
    sha256: &str,
) {
    assert!(
        b.capabilities().can_fetch(url),
        "{} says it cannot fetch {url}",
        b.name()
    );
    let mut s = sh(
        image,
        // The group's own 2>/dev/null takes the shell's "cannot create" too: a message on
        // stderr could otherwise land between two pieces of cat's output in the merged log.
        "cat /data/inputs/fetched/0; if { echo x >> /data/inputs/fetched/0; } 2>/dev/null; then echo INPUT-WRITABLE; fi",
    );
    s.fetch = vec![RemoteFile {
        url: url.to_string(),
        target: "/data/inputs/fetched/0".into(),
        max_bytes: 1 << 20,
    }];
    b.start(&s)
        .await
        .unwrap_or_else(|e| panic!("start failed: {e}"));
    let exit = tokio::time::timeout(PATIENCE, b.wait(&s.job_id))
        .await
        .expect("run did not end in time")
        .unwrap();
    let collected = b.collect(&s.job_id).await.unwrap();
    let logs = collect_logs(b, &s.job_id).await;
    b.remove(&s.job_id).await.unwrap();
    assert_eq!(exit.exit_code, 0, "{logs}");
    assert!(
        logs.contains(&*String::from_utf8_lossy(content)),
        "{logs:?}"
    );
    assert!(
        !logs.contains("INPUT-WRITABLE"),
        "a fetched input was writable"
    );
    assert_eq!(collected.fetched.len(), 1, "{collected:?}");
    let f = &collected.fetched[0];
    assert_eq!(
        (f.target.as_str(), f.size, f.sha256.as_str()),
        ("/data/inputs/fetched/0", content.len() as u64, sha256)
    );
}

/// An input the backend would fetch but that does not exist fails the start (or the run) as an
/// input error: retrying does not help, and no algorithm ran.
pub async fn missing_fetched_input_is_an_input_error(
    b: &dyn ComputeBackend,
    image: &str,
    missing_url: &str,
) {
    let mut s = sh(image, "echo RAN");
    s.fetch = vec![RemoteFile {
        url: missing_url.to_string(),
        target: "/data/inputs/x/0".into(),
        max_bytes: 1 << 20,
    }];
    match b.start(&s).await {
        Err(BackendError::Input { message, .. }) => {
            assert!(message.contains(missing_url), "{message}")
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    b.remove(&s.job_id).await.unwrap();
}

/// Runs every check against one backend: `conformance_tests!(make_backend().await, "image:tag");`
/// The first argument is an async expression building the backend. When it builds a fixture
/// that holds the backend (and the emulator it talks to), name a `fn(&Fixture) -> &dyn
/// ComputeBackend` after it: `conformance_tests!(fixture().await, backend_of, "image:tag");`
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr, $image:expr) => {
        $crate::conformance_tests!($make, std::convert::identity, $image);
    };
    ($make:expr, $project:expr, $image:expr) => {
        $crate::conformance_tests!(@each $make, $project, $image;
            reports_exit_code, streams_stdout_and_stderr, passes_environment, start_is_idempotent,
            stop_kills_a_running_run, remove_leaves_nothing, missing_image_is_reported,
            mounts_honour_read_only, isolation_defaults, enforces_pids_limit, reports_out_of_memory,
            second_look_after_exit, collect_is_repeatable, backstop_ends_a_lost_run,
            stop_ends_a_run_that_has_not_started);
    };
    (@each $make:expr, $project:expr, $image:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = $make;
                $crate::conformance::$name($project(&fixture), $image).await;
            }
        )*
    };
}
