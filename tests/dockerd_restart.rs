//! The Docker engine restarted under a running job (a daemon upgrade, a crash): the job ends,
//! finished or failed with a reason, and never hangs; nothing of it is left on the engine.
//! Real: dockerd (restarted through scripts/dockerd.sh, so only when that script started it)
//! and the service binary. Its own test binary: the restart kills every container on the
//! engine, so nothing else may run beside it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Service;

fn dockerd(action: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dockerd.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(action)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/dockerd.sh {action} failed");
}

#[tokio::test]
async fn a_docker_restart_during_a_run_ends_the_job_and_leaves_nothing() {
    let pidfile = Path::new(env!("CARGO_MANIFEST_DIR")).join(".state/dockerd.pid");
    if !pidfile.exists() {
        eprintln!(
            "skipped: dockerd was not started by scripts/dockerd.sh, so this test may not restart it"
        );
        return;
    }
    let svc = Service::start_with(&[("BRIZO_LIMITS__GRACE_SECS", "30")]).await;
    let id = svc
        .submit(common::python_job(
            "import time\nprint('working', flush=True)\ntime.sleep(4)\nopen('/data/outputs/r.txt','w').write('r')\n",
        ))
        .await;
    svc.wait_status(&id, 40, Duration::from_secs(60)).await;
    dockerd("stop");
    dockerd("start");
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    match job["outcome"].as_str() {
        Some("succeeded") => {}
        Some("failed") => assert!(
            !job["error"].as_str().unwrap_or("").is_empty(),
            "failed without a reason: {job}"
        ),
        other => panic!("ended as {other:?}: {job}\n{}", svc.log()),
    }
    svc.wait_cleaned(&id).await;
    assert!(
        common::containers_of(&svc.instance()).is_empty(),
        "containers left"
    );
    assert!(!svc.data_dir().join("jobs").join(&id).exists());
    // The service goes on with the engine that came back.
    let next = svc.submit(common::python_job("print('after')")).await;
    assert_eq!(
        svc.wait_finished(&next, Duration::from_secs(60)).await["outcome"],
        "succeeded"
    );
}
