//! Where the service spent a job's time, as it recorded it (`timings`): gathered over a
//! bench's rounds and printed as medians, phase by phase. Also the median the benches use.

use std::collections::HashMap;

use serde_json::Value;

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// Seconds per phase, one entry per measured round.
#[derive(Default)]
pub struct Phases(HashMap<String, Vec<f64>>);

impl Phases {
    /// A finished job's `timings` (milliseconds per phase).
    pub fn add(&mut self, timings: &Value) {
        for (phase, ms) in timings.as_object().unwrap() {
            self.0
                .entry(phase.clone())
                .or_default()
                .push(ms.as_f64().unwrap() / 1000.0);
        }
    }

    /// The medians, in the phases' order.
    pub fn print(mut self) {
        println!("  per phase (server):");
        for phase in [
            "queuedMs",
            "stagingMs",
            "startingMs",
            "runningMs",
            "filteringMs",
            "publishingMs",
            "cleanupMs",
        ] {
            if let Some(xs) = self.0.remove(phase) {
                println!(
                    "    {:<14} {:>8.1} ms",
                    phase.trim_end_matches("Ms"),
                    median(xs) * 1000.0
                );
            }
        }
    }
}
