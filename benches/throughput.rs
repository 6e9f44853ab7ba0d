//! Job throughput and memory. A burst of trivial jobs through the API with
//! `max_running_jobs = 4`, against the bare Docker create/start/wait/remove of the same image
//! and isolation run four at a time, in the same run; then the service's resident memory at
//! rest, at start and after the jobs (`BRIZO_BENCH_JOBS`, 500 by default, twice: 1,000 jobs).
//! `BRIZO_SOAK_JOBS=5000` (make soak) runs that many more and prints the memory every 500.
//! Needs dockerd and the base image (`make bench` starts both).

#[path = "support/bare.rs"]
mod bare;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/table.rs"]
mod table;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use table::Goal;

const AT_ONCE: usize = 4;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Submits `n` jobs at once and waits until every one has finished; seconds.
async fn burst(svc: &common::Service, n: usize) -> f64 {
    let job = json!({"image": common::IMAGE, "entrypoint": "/bin/true",
                     "algorithm": {"rawcode": "# nothing"}, "timeoutSeconds": 120});
    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..n)
        .map(|_| svc.submit(job.clone()))
        .buffer_unordered(16)
        .collect()
        .await;
    for id in &ids {
        let done: Value = svc
            .poll_finished(id, Duration::from_secs(900), Duration::from_millis(20))
            .await;
        assert_eq!(done["outcome"], "succeeded", "{done}");
    }
    started.elapsed().as_secs_f64()
}

/// Resident memory of a process, in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Memory once the service is idle: its after-run steps done, a few seconds of rest.
async fn rss_at_rest(pid: u32) -> f64 {
    tokio::time::sleep(Duration::from_secs(5)).await;
    rss_mib(pid)
}

#[tokio::main]
async fn main() {
    let docker = bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .expect("dockerd: run `scripts/dockerd.sh start`");
    let n = count("BRIZO_BENCH_JOBS", 500);
    let svc = common::Service::start_with(&[("BRIZO_MAX_RUNNING_JOBS", "4")]).await;
    let pid = svc.child.as_ref().unwrap().id();
    let start_rss = rss_at_rest(pid).await;

    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let name = format!("brizo-bench-burst-{}-{i}", std::process::id());
            let docker = &docker;
            async move {
                bare::lifecycle(docker, common::IMAGE, "/bin/true", &name).await;
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect::<Vec<()>>()
        .await;
    let bare = t.elapsed().as_secs_f64();
    let through = burst(&svc, n).await;
    let after_one = rss_at_rest(pid).await;
    println!(
        "{n} trivial jobs, {AT_ONCE} at a time:\n  bare Docker lifecycles   {bare:>7.1} s  {:>6.1} jobs/s\n  brizo (API, max_running_jobs = 4) {through:>7.1} s  {:>6.1} jobs/s  throughput ratio {:.2}",
        n as f64 / bare,
        n as f64 / through,
        bare / through
    );
    table::record(
        &format!("{n} trivial jobs through the API, 4 at a time"),
        &format!("{:.1} jobs/s", n as f64 / through),
        &format!("{:.1} jobs/s (bare Docker)", n as f64 / bare),
        bare / through,
        Goal::AtLeast(0.8),
    );

    let _ = burst(&svc, n).await;
    let after_two = rss_at_rest(pid).await;
    println!(
        "resident memory at rest: start {start_rss:.1} MiB, after {n} jobs {after_one:.1} MiB, after {} jobs {after_two:.1} MiB",
        2 * n
    );
    table::record(
        &format!("idle memory after {} jobs", 2 * n),
        &format!("{after_two:.1} MiB"),
        &format!("{start_rss:.1} MiB (at start)"),
        after_two / start_rss,
        Goal::AtMost(2.0),
    );

    let soak = count("BRIZO_SOAK_JOBS", 0);
    if soak > 0 {
        let mut samples = vec![after_two];
        let mut done = 0;
        while done < soak {
            let step = 500.min(soak - done);
            let _ = burst(&svc, step).await;
            done += step;
            let rss = rss_at_rest(pid).await;
            println!("  soak: {done} more jobs, {rss:.1} MiB at rest");
            samples.push(rss);
        }
        let last = *samples.last().unwrap();
        table::record(
            &format!("idle memory over a {soak}-job soak"),
            &format!("{last:.1} MiB at the end"),
            &format!("{after_two:.1} MiB (before it)"),
            last / after_two,
            Goal::AtMost(1.2),
        );
    }
}
