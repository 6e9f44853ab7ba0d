//! kill -9 of the service while a job runs, then a restart: the job completes (or ends with
//! a reason) and nothing is orphaned.

mod common;

use std::time::Duration;

use common::{Service, python_job};

const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_running_job_survives_a_crash_of_the_service() {
    let mut svc = Service::start().await;
    let code = "import time\nfor i in range(6):\n    print('step', i, flush=True)\n    time.sleep(0.5)\nopen('/data/outputs/done.txt','w').write('finished')\n";
    let id = svc.submit(python_job(code)).await;
    svc.wait_status(&id, 40, PATIENCE).await;
    svc.kill9();
    // The container goes on without the service.
    assert_eq!(common::containers_of(&svc.instance()).len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    svc.spawn().await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "succeeded", "{job}\n{}", svc.log());
    assert_eq!(job["outputs"][0]["name"], "done.txt");
    let logs = svc.logs(&id).await;
    for i in 0..6 {
        assert!(
            logs.contains(&format!("step {i}")),
            "log lost lines across the restart: {logs}"
        );
    }
    svc.wait_cleaned(&id).await;
    assert!(
        common::containers_of(&svc.instance()).is_empty(),
        "orphan container"
    );
    assert!(
        !svc.data_dir().join("jobs").join(&id).exists(),
        "orphan job folder"
    );
}

#[tokio::test]
async fn a_job_whose_container_ended_during_the_outage_is_collected() {
    let mut svc = Service::start().await;
    let id = svc
        .submit(python_job(
            "open('/data/outputs/r.txt','w').write('r')\nimport time\ntime.sleep(1)",
        ))
        .await;
    svc.wait_status(&id, 40, PATIENCE).await;
    svc.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await; // the container exits while nobody watches
    svc.spawn().await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "succeeded", "{job}");
    assert_eq!(job["outputs"][0]["name"], "r.txt");
    svc.wait_cleaned(&id).await;
    assert!(common::containers_of(&svc.instance()).is_empty());
}

#[tokio::test]
async fn a_container_removed_during_the_outage_ends_the_job_with_a_reason() {
    let mut svc = Service::start().await;
    let id = svc.submit(python_job("import time\ntime.sleep(300)")).await;
    svc.wait_status(&id, 40, PATIENCE).await;
    svc.kill9();
    let status = std::process::Command::new("/usr/bin/docker")
        .args(["rm", "-f", &format!("brizo-{id}")])
        .status()
        .unwrap();
    assert!(status.success());
    svc.spawn().await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("container disappeared"),
        "{job}"
    );
    svc.wait_cleaned(&id).await;
    assert!(!svc.data_dir().join("jobs").join(&id).exists());
}

#[tokio::test]
async fn queued_jobs_survive_a_crash_and_orphans_are_swept() {
    let mut svc = Service::start_with(&[("BRIZO_MAX_RUNNING_JOBS", "1")]).await;
    let blocker = svc.submit(python_job("import time\ntime.sleep(2)")).await;
    let queued = svc.submit(python_job("print('second')")).await;
    svc.wait_status(&blocker, 40, PATIENCE).await;
    svc.kill9();
    // A container of this instance that no job knows: the sweep at start removes it.
    let orphan = std::process::Command::new("/usr/bin/docker")
        .args([
            "create",
            "--label",
            &format!("brizo.instance={}", svc.instance()),
            "--label",
            "brizo.job-id=unknownjob",
            common::IMAGE,
            "true",
        ])
        .output()
        .unwrap();
    assert!(orphan.status.success());
    std::fs::create_dir_all(svc.data_dir().join("jobs").join("unknownjob")).unwrap();
    svc.spawn().await;
    for id in [&blocker, &queued] {
        assert_eq!(
            svc.wait_finished(id, PATIENCE).await["outcome"],
            "succeeded"
        );
        svc.wait_cleaned(id).await;
    }
    assert!(
        common::containers_of(&svc.instance()).is_empty(),
        "orphans remain"
    );
    assert!(!svc.data_dir().join("jobs").join("unknownjob").exists());
}

/// After a restart, a re-attached run keeps its slot: with `max_running_jobs = 1` a queued job
/// does not start beside it.
#[tokio::test]
async fn a_restart_does_not_overshoot_max_running_jobs() {
    let mut svc = Service::start_with(&[("BRIZO_MAX_RUNNING_JOBS", "1")]).await;
    let blocker = svc.submit(python_job("import time\ntime.sleep(5)")).await;
    let queued = svc.submit(python_job("import time\ntime.sleep(1)")).await;
    svc.wait_status(&blocker, 40, PATIENCE).await;
    svc.kill9();
    svc.spawn().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut most = 0;
    loop {
        let running = running_containers(&svc.instance());
        most = most.max(running);
        let done =
            svc.job(&queued).await["status"] == 70 && svc.job(&blocker).await["status"] == 70;
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the jobs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        most,
        1,
        "two runs at once with max_running_jobs = 1\n{}",
        svc.log()
    );
    assert_eq!(svc.job(&queued).await["outcome"], "succeeded");
}

fn running_containers(instance: &str) -> usize {
    let out = std::process::Command::new("/usr/bin/docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=brizo.instance={instance}"),
            "--filter",
            "status=running",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count()
}
