//! The same trivial job through the service on Slurm, against a bare slurmrestd submit ->
//! COMPLETED loop whose batch script runs the same image with `docker run --rm`, measured
//! interleaved in one run on a one-node cluster started here; prints medians, the ratio and
//! the service's phases. The ratio shows what brizo adds (the plan and staged files, the
//! runner's placing and archiving, the hardened container, polling), not Slurm's own cost.
//! Needs dockerd, the base image, Slurm and the runner (`make bench` prepares them).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/phases.rs"]
mod phases;
#[path = "support/remote.rs"]
mod remote;

use std::path::PathBuf;
use std::time::Instant;

use brizo_test_rigs::built_runner;
use brizo_test_rigs::slurm::Slurm;
use remote::{COMMAND, POLL};
use serde_json::{Value, json};

struct Bare {
    http: reqwest::Client,
    url: String,
    token: String,
    dir: PathBuf,
}

impl Bare {
    async fn call(&self, request: reqwest::RequestBuilder) -> Value {
        request
            .header("X-SLURM-USER-NAME", "root")
            .header("X-SLURM-USER-TOKEN", &self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn run(&self, n: usize) -> f64 {
        let script = format!(
            "#!/bin/sh\nexec docker run --rm --network none {} {COMMAND}\n",
            common::IMAGE
        );
        let job = json!({"name": format!("bench-bare-{n}"), "environment": {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            "current_working_directory": self.dir.display().to_string(), "standard_output": self.dir.join("bare.log").display().to_string()});
        let started = Instant::now();
        let submitted = self
            .call(
                self.http
                    .post(format!("{}/slurm/v0.0.38/job/submit", self.url))
                    .json(&json!({"script": script, "job": job})),
            )
            .await;
        let id = submitted["job_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{submitted}"));
        loop {
            let out = self
                .call(
                    self.http
                        .get(format!("{}/slurm/v0.0.38/job/{id}", self.url)),
                )
                .await;
            match out["jobs"][0]["job_state"].as_str() {
                Some("COMPLETED") => return started.elapsed().as_secs_f64(),
                Some("FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL") => {
                    panic!("the bare job failed: {out}")
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cluster = Slurm::start(&root).unwrap_or_else(|e| panic!("{e}"));
    let runner = built_runner(&root).unwrap_or_else(|e| panic!("{e}"));
    let bare = Bare {
        http: reqwest::Client::new(),
        url: cluster.url.clone(),
        token: std::fs::read_to_string(&cluster.token_file).unwrap(),
        dir: cluster.dir.clone(),
    };
    let config = format!(
        "backend = \"cluster\"\n[[backends]]\nname = \"cluster\"\nkind = \"slurm\"\n[backends.slurm]\nurl = \"{}\"\ntoken_file = \"{}\"\n\
         staging_dir = \"{}\"\nrunner_path = \"{}\"\npoll_ms = {}\nimages = \"docker\"\n",
        cluster.url,
        cluster.token_file.display(),
        cluster.dir.join("staging").display(),
        runner.display(),
        POLL.as_millis()
    );
    let svc = common::Service::start_with_config(&[], &config).await;
    let rounds = remote::interleaved(&svc, |n| bare.run(n)).await;
    remote::report(
        "Slurm (one node, slurmrestd)",
        "bare slurmrestd submit -> COMPLETED",
        rounds,
    );
}
