//! One line per figure for the table `make bench` prints at the end (scripts/bench.sh): the
//! figure, its value, the baseline measured in the same run, the ratio, and the goal.

use std::io::Write;

/// Whether the ratio must stay at or above the goal (`AtLeast`) or at or below it (`AtMost`).
// Each bench uses the variants its goals need.
#[allow(dead_code)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

pub fn record(figure: &str, value: &str, baseline: &str, ratio: f64, goal: Goal) {
    let (goal, met) = match goal {
        Goal::AtLeast(g) => (format!(">= {g}"), if ratio >= g { "yes" } else { "NO" }),
        Goal::AtMost(g) => (format!("<= {g}"), if ratio <= g { "yes" } else { "NO" }),
    };
    let line = format!("{figure}\t{value}\t{baseline}\t{ratio:.2}\t{goal}\t{met}\n");
    println!("  table: {}", line.trim_end().replace('\t', " | "));
    if let Ok(path) = std::env::var("BRIZO_BENCH_TABLE")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
