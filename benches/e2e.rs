//! End-to-end cost of a trivial job through the whole service, against the bare Docker
//! create/start/wait/remove of the same image and command, measured in the same run.
//! Prints medians, the ratio, and where the service spends its time (per phase).
//! Needs dockerd and the base image (`make bench` starts both).

#[path = "support/bare.rs"]
mod bare;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/phases.rs"]
mod phases;
#[path = "support/table.rs"]
mod table;

use std::time::{Duration, Instant};

use phases::{Phases, median};
use serde_json::{Value, json};

const ROUNDS: usize = 15;
const WARMUP: usize = 3;
const COMMAND: &str = "/bin/true";

/// Seconds per round after the warm-up: the bare lifecycle (and its four steps), brizo's job
/// as the client saw it, as the server recorded it, with the cleanup after it; its phases.
#[derive(Default)]
struct Samples {
    bare: Vec<f64>,
    bare_steps: [Vec<f64>; 4],
    client: Vec<f64>,
    server: Vec<f64>,
    with_cleanup: Vec<f64>,
    phases: Phases,
}

async fn measure(docker: &bollard::Docker, svc: &common::Service, job: &Value) -> Samples {
    let mut m = Samples::default();
    // Interleaved, so that drift of the machine affects both sides alike.
    for n in 0..WARMUP + ROUNDS {
        let name = format!("brizo-bench-bare-{}-{n}", std::process::id());
        let b = bare::lifecycle(docker, common::IMAGE, COMMAND, &name, vec![]).await;
        let started = Instant::now();
        let id = svc.submit(job.clone()).await;
        let done: Value = svc
            .poll_finished(&id, Duration::from_secs(120), Duration::from_millis(2))
            .await;
        let client = started.elapsed().as_secs_f64();
        assert_eq!(done["outcome"], "succeeded", "{done}");
        // Cleanup (container removal) happens right after the job reports finished; wait for
        // it so runs do not overlap, and count it in the breakdown.
        let finished = loop {
            let j = svc.job(&id).await;
            if j["timings"].get("cleanupMs").is_some() {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if n < WARMUP {
            continue;
        }
        m.bare.push(b.iter().sum::<f64>());
        for (i, step) in b.iter().enumerate() {
            m.bare_steps[i].push(*step);
        }
        m.client.push(client);
        let server =
            finished["dateFinished"].as_f64().unwrap() - finished["dateCreated"].as_f64().unwrap();
        m.server.push(server);
        m.with_cleanup
            .push(server + finished["timings"]["cleanupMs"].as_f64().unwrap() / 1000.0);
        m.phases.add(&finished["timings"]);
    }
    m
}

/// The medians, their ratios to the bare lifecycle, the table's line, the phases.
fn report(m: Samples) {
    let (b, c, s, w) = (
        median(m.bare),
        median(m.client),
        median(m.server),
        median(m.with_cleanup),
    );
    println!(
        "trivial job ({COMMAND} in {}, one small file input), {ROUNDS} rounds after {WARMUP} warm-up, medians:",
        common::IMAGE
    );
    println!(
        "  bare bollard create/start/wait/remove    {:>8.1} ms",
        b * 1000.0
    );
    for (i, step) in ["create", "start", "wait", "remove"].iter().enumerate() {
        println!(
            "    {step:<14} {:>8.1} ms",
            median(m.bare_steps[i].clone()) * 1000.0
        );
    }
    println!(
        "  brizo, submit -> finished (server)       {:>8.1} ms   ratio {:.2}",
        s * 1000.0,
        s / b
    );
    println!(
        "  brizo, submit -> finished (client poll)  {:>8.1} ms   ratio {:.2}",
        c * 1000.0,
        c / b
    );
    println!(
        "  brizo, submit -> finished + cleanup      {:>8.1} ms   ratio {:.2}",
        w * 1000.0,
        w / b
    );
    table::record(
        "one trivial job, submit -> finished",
        &format!("{:.0} ms", c * 1000.0),
        &format!("{:.0} ms (bare Docker)", b * 1000.0),
        c / b,
        table::Goal::AtMost(1.2),
    );
    m.phases.print();
}

#[tokio::main]
async fn main() {
    let docker = bare::engine().await;
    let svc = common::Service::start().await;
    let input = svc.dataset("bench/input.csv", "a,b\n1,2\n");
    let job = json!({"image": common::IMAGE, "entrypoint": COMMAND, "algorithm": {"rawcode": "# nothing"},
                     "inputs": [{"url": input}], "timeoutSeconds": 60});
    report(measure(&docker, &svc, &job).await);
}
