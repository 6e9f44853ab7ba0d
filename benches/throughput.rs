//! Job throughput and memory. A burst of trivial jobs through the API with
//! `max_running_jobs = 4`, against the bare Docker create/start/wait/remove of the same image
//! and isolation run four at a time, in the same run: two rounds of a bare run then brizo's
//! burst (`BRIZO_BENCH_JOBS`, 500 by default, each: 1,000 jobs through brizo); and the
//! service's resident memory at rest, at start and after each burst.
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

/// CPU seconds so far: the whole machine's (every core, from /proc/stat), and one process's
/// with its reaped children (mkfs and the like).
struct Cpu {
    machine: f64,
    /// brizo's (user, system) time.
    process: (f64, f64),
    dockerd: f64,
}

fn ticks() -> f64 {
    // USER_HZ is 100 on every Linux this runs on.
    100.0
}

/// A process's (user, system) CPU seconds, its reaped children's included.
fn process_times(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime stime cutime cstime are 12..=15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0.0) / ticks();
    (at(11) + at(13), at(12) + at(14))
}

fn process_cpu(pid: u32) -> f64 {
    let (user, system) = process_times(pid);
    user + system
}

fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

fn cpu(pid: u32) -> Cpu {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let all: f64 = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse::<f64>().ok())
        .enumerate()
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Cpu {
        machine: all / ticks(),
        process: process_times(pid),
        dockerd: pid_of("dockerd").map_or(0.0, process_cpu),
    }
}

/// What a run cost in CPU seconds: the machine's, brizo's, dockerd's.
fn cpu_line(label: &str, from: &Cpu, to: &Cpu, jobs: usize) -> String {
    let per = |x: f64| x * 1000.0 / jobs as f64;
    format!(
        "  {label:<34} CPU per job: machine {:>5.1} ms, brizo {:>5.1} ms ({:.1} in the kernel), dockerd {:>5.1} ms",
        per(to.machine - from.machine),
        per(to.process.0 + to.process.1 - from.process.0 - from.process.1),
        per(to.process.1 - from.process.1),
        per(to.dockerd - from.dockerd),
    )
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
    let disk = std::env::var("BRIZO_BENCH_DISK").unwrap_or_else(|_| "auto".into());
    let svc = common::Service::start_with(&[
        ("BRIZO_MAX_RUNNING_JOBS", "4"),
        ("BRIZO_LIMITS__DISK", &disk),
    ])
    .await;
    let pid = svc.child.as_ref().unwrap().id();
    let start_rss = rss_at_rest(pid).await;

    // Two baselines: the container alone, and the container with the folders every job's
    // container has (an input and the algorithm read-only, outputs and logs writable), made
    // fresh for each, as brizo's workspace is. The second is the job's container exactly.
    // It runs before each of brizo's two bursts (bare, brizo, bare, brizo), and the ratio is
    // of the sums: the machine's speed drifts over minutes, and a baseline taken only before
    // would put that drift into the ratio.
    let folders = tempfile::tempdir().unwrap();
    let bare_run = |round: usize, with_folders: bool| {
        let (docker, folders) = (&docker, folders.path().to_path_buf());
        async move {
            let t = Instant::now();
            futures::stream::iter(0..n)
                .map(|i| {
                    let name = format!("brizo-bench-burst-{}-{round}-{i}", std::process::id());
                    let mounts = if with_folders {
                        bare::job_folders(&folders.join(format!("{round}-{i}")))
                    } else {
                        vec![]
                    };
                    async move {
                        bare::lifecycle(docker, common::IMAGE, "/bin/true", &name, mounts).await;
                    }
                })
                .buffer_unordered(AT_ONCE)
                .collect::<Vec<()>>()
                .await;
            t.elapsed().as_secs_f64()
        }
    };
    let cpu_start = cpu(pid);
    let alone = bare_run(0, false).await;
    let cpu_alone = cpu(pid);
    let mut bare = [0.0; 2];
    let mut through = [0.0; 2];
    let mut cpu_rounds = vec![];
    let mut rss_after = vec![];
    for round in 0..2 {
        let from = cpu(pid);
        bare[round] = bare_run(round + 1, true).await;
        let between = cpu(pid);
        through[round] = burst(&svc, n).await;
        cpu_rounds.push((from, between, cpu(pid)));
        rss_after.push(rss_at_rest(pid).await);
    }
    let [after_one, after_two] = rss_after[..] else {
        unreachable!("two rounds")
    };
    let rate = |secs: f64| n as f64 / secs;
    let (with_folders, brizo) = (bare[0] + bare[1], through[0] + through[1]);
    println!(
        "{n} trivial jobs, {AT_ONCE} at a time, in two rounds (bare then brizo, twice):
  bare Docker lifecycles, the container alone   {alone:>7.1} s  {:>6.1} jobs/s  (once, before)
  the same with the job's folders mounted       {:>7.1} s {:>7.1} s  {:>6.1} jobs/s
  brizo (API, max_running_jobs = 4)             {:>7.1} s {:>7.1} s  {:>6.1} jobs/s
  ratio to the bare run with folders, per round {:.2}, {:.2}; of the sums {:.2}",
        rate(alone),
        bare[0],
        bare[1],
        rate(with_folders / 2.0),
        through[0],
        through[1],
        rate(brizo / 2.0),
        bare[0] / through[0],
        bare[1] / through[1],
        with_folders / brizo,
    );
    // Where the difference goes: on 2 cores the burst is CPU-bound, so these are its cost.
    println!(
        "{}",
        cpu_line("bare, the container alone", &cpu_start, &cpu_alone, n)
    );
    for (round, (from, between, to)) in cpu_rounds.iter().enumerate() {
        let k = round + 1;
        println!(
            "{}",
            cpu_line(
                &format!("bare, with the job's folders ({k})"),
                from,
                between,
                n
            )
        );
        println!("{}", cpu_line(&format!("brizo ({k})"), between, to, n));
    }
    table::record(
        &format!("{n} trivial jobs through the API, 4 at a time (two rounds)"),
        &format!("{:.1} jobs/s", rate(brizo / 2.0)),
        &format!(
            "{:.1} jobs/s (bare Docker, the job's mounts; {:.1} without: {:.2})",
            rate(with_folders / 2.0),
            rate(alone),
            2.0 * alone / brizo
        ),
        with_folders / brizo,
        Goal::AtLeast(0.8),
    );
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
