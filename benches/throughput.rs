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

/// n bare lifecycles, `AT_ONCE` at a time, each with the job's folders (fresh, under `folders`)
/// or the container alone; seconds.
async fn bare_run(
    docker: &bollard::Docker,
    folders: &std::path::Path,
    n: usize,
    round: usize,
    with_folders: bool,
) -> f64 {
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

/// What the two rounds measured: seconds, CPU snapshots and memory at rest after each burst.
struct Rounds {
    alone: f64,
    bare: [f64; 2],
    through: [f64; 2],
    /// Around the run of the container alone.
    cpu_alone: (Cpu, Cpu),
    /// Each round: before its bare run, between it and the burst, after the burst.
    cpu_rounds: Vec<(Cpu, Cpu, Cpu)>,
    rss_after: [f64; 2],
}

/// Two baselines: the container alone, and the container with the folders every job's
/// container has (an input and the algorithm read-only, outputs and logs writable), made fresh
/// for each, as brizo's workspace is. The second is the job's container exactly. It runs before
/// each of brizo's two bursts (bare, brizo, bare, brizo), and the ratio is of the sums: the
/// machine's speed drifts over minutes, and a baseline taken only before would put that drift
/// into the ratio.
async fn measure(svc: &common::Service, docker: &bollard::Docker, pid: u32, n: usize) -> Rounds {
    let folders = tempfile::tempdir().unwrap();
    let start = cpu(pid);
    let alone = bare_run(docker, folders.path(), n, 0, false).await;
    let cpu_alone = (start, cpu(pid));
    let mut bare = [0.0; 2];
    let mut through = [0.0; 2];
    let mut cpu_rounds = vec![];
    let mut rss_after = [0.0; 2];
    for round in 0..2 {
        let from = cpu(pid);
        bare[round] = bare_run(docker, folders.path(), n, round + 1, true).await;
        let between = cpu(pid);
        through[round] = burst(svc, n).await;
        cpu_rounds.push((from, between, cpu(pid)));
        rss_after[round] = rss_at_rest(pid).await;
    }
    Rounds {
        alone,
        bare,
        through,
        cpu_alone,
        cpu_rounds,
        rss_after,
    }
}

/// The rounds' times, rates and ratios, their CPU per job, and the table's line.
fn report(r: &Rounds, n: usize) {
    let rate = |secs: f64| n as f64 / secs;
    let (alone, bare, through) = (r.alone, r.bare, r.through);
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
    let (from, to) = &r.cpu_alone;
    println!("{}", cpu_line("bare, the container alone", from, to, n));
    for (round, (from, between, to)) in r.cpu_rounds.iter().enumerate() {
        let k = round + 1;
        let label = format!("bare, with the job's folders ({k})");
        println!("{}", cpu_line(&label, from, between, n));
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
}

/// `soak` more jobs, 500 at a time, with the memory at rest after each 500.
async fn soak(svc: &common::Service, pid: u32, soak: usize, before: f64) {
    let mut last = before;
    let mut done = 0;
    while done < soak {
        let step = 500.min(soak - done);
        let _ = burst(svc, step).await;
        done += step;
        last = rss_at_rest(pid).await;
        println!("  soak: {done} more jobs, {last:.1} MiB at rest");
    }
    table::record(
        &format!("idle memory over a {soak}-job soak"),
        &format!("{last:.1} MiB at the end"),
        &format!("{before:.1} MiB (before it)"),
        last / before,
        Goal::AtMost(1.2),
    );
}

#[tokio::main]
async fn main() {
    let docker = bare::engine().await;
    let n = count("BRIZO_BENCH_JOBS", 500);
    let disk = std::env::var("BRIZO_BENCH_DISK").unwrap_or_else(|_| "auto".into());
    let svc = common::Service::start_with(&[
        ("BRIZO_MAX_RUNNING_JOBS", "4"),
        ("BRIZO_LIMITS__DISK", &disk),
    ])
    .await;
    let pid = svc.child.as_ref().unwrap().id();
    let start_rss = rss_at_rest(pid).await;
    let rounds = measure(&svc, &docker, pid, n).await;
    report(&rounds, n);
    let [after_one, after_two] = rounds.rss_after;
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
    let more = count("BRIZO_SOAK_JOBS", 0);
    if more > 0 {
        soak(&svc, pid, more, after_two).await;
    }
}
