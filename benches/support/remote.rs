//! What the remote backends' benches share: the trivial job, a bare run and brizo's run of it
//! interleaved round by round (so that drift of the machine affects both sides alike), and the
//! report: medians, the ratio, and the service's own phases.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{IMAGE, Service};
use crate::phases::{Phases, median};

pub const ROUNDS: usize = 7;
pub const WARMUP: usize = 1;
/// What the trivial job runs, in [`IMAGE`], on both sides.
pub const COMMAND: &str = "/bin/true";
/// How often both sides ask whether their job has ended.
pub const POLL: Duration = Duration::from_millis(50);

/// The seconds of each measured round on both sides, and of each of brizo's phases.
pub struct Rounds {
    bare: Vec<f64>,
    brizo: Vec<f64>,
    phases: Phases,
}

/// [`WARMUP`] + [`ROUNDS`] rounds, each a bare run (`bare(n)`: its seconds) and then the
/// trivial job through `svc`, submitted to finished as a client polling sees it; the warm-up
/// rounds are not kept.
pub async fn interleaved<F, Fut>(svc: &Service, mut bare: F) -> Rounds
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = f64>,
{
    let job = json!({"image": IMAGE, "entrypoint": COMMAND, "algorithm": {"rawcode": "# nothing"}, "timeoutSeconds": 120});
    let mut rounds = Rounds {
        bare: vec![],
        brizo: vec![],
        phases: Phases::default(),
    };
    for n in 0..WARMUP + ROUNDS {
        let b = bare(n).await;
        let started = Instant::now();
        let id = svc.submit(job.clone()).await;
        let done: Value = svc.poll_finished(&id, Duration::from_secs(120), POLL).await;
        let s = started.elapsed().as_secs_f64();
        assert_eq!(done["outcome"], "succeeded", "{done}\n{}", svc.log());
        svc.wait_cleaned(&id).await;
        if n < WARMUP {
            continue;
        }
        rounds.bare.push(b);
        rounds.brizo.push(s);
        rounds.phases.add(&svc.job(&id).await["timings"]);
    }
    rounds
}

/// Prints the medians of `rounds` on `backend`, the bare side as `bare` (what it measured).
pub fn report(backend: &str, bare: &str, rounds: Rounds) {
    let (b, s) = (median(rounds.bare), median(rounds.brizo));
    println!(
        "trivial job ({COMMAND} in {IMAGE}) on {backend}, {ROUNDS} rounds after {WARMUP} warm-up, medians:"
    );
    println!("  {bare:<42}{:>8.1} ms", b * 1000.0);
    println!(
        "  {:<42}{:>8.1} ms   ratio {:.2}",
        "brizo, submit -> finished (client poll)",
        s * 1000.0,
        s / b
    );
    rounds.phases.print();
}
