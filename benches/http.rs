//! The service's hot read paths under load, against the same server's framework limit in the
//! same run: `wrk` (2 threads, 50 connections) on `GET /api/v2/jobs/{id}` with the token, and
//! on the same URL with a wrong token (a 401 is the cheapest answer the server has: routing,
//! the middleware and the token check), and on `/health`. Prints requests/s, p99 and ratios.
//! Then v1's signed status (`GET /api/v1/brizo/services/compute` as Squid sends it: one
//! signature to recover per request) of a job under an agreement on a local chain, against
//! that server's 401 rate.
//! Needs dockerd, the base image, anvil and wrk (`make bench` installs and starts them).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/table.rs"]
mod table;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use table::Goal;

const SECONDS: u32 = 8;

struct Load {
    rate: f64,
    p99_ms: f64,
}

/// Parses wrk's `Requests/sec:` and the `99%` line of `--latency`.
fn wrk(url: &str, token: &str) -> Load {
    let out = Command::new("wrk")
        .args(["-t2", "-c50", &format!("-d{SECONDS}s"), "--latency", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()
        .expect("wrk (make bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx") || token == "wrong-token",
        "errors under load:\n{text}"
    );
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no p99 in wrk's output:\n{text}"));
    let p99_ms = if let Some(us) = p99.strip_suffix("us") {
        us.parse::<f64>().unwrap() / 1000.0
    } else if let Some(ms) = p99.strip_suffix("ms") {
        ms.parse().unwrap()
    } else if let Some(s) = p99.strip_suffix('s') {
        s.parse::<f64>().unwrap() * 1000.0
    } else {
        panic!("p99 {p99}?")
    };
    Load { rate, p99_ms }
}

#[tokio::main]
async fn main() {
    v2_status_and_health().await;
    v1_signed_status().await;
}

/// The v2 status of a finished job and the health check, against the same server's 401s.
async fn v2_status_and_health() {
    let svc = common::Service::start().await;
    let id = svc
        .submit(json!({"image": common::IMAGE, "entrypoint": "/bin/true",
                       "algorithm": {"rawcode": "# nothing"}, "timeoutSeconds": 60}))
        .await;
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["outcome"], "succeeded", "{job}");
    let url = svc.url(&format!("/api/v2/jobs/{id}"));
    // Warm-up: connections, caches, the allocator.
    let _ = wrk(&url, "wrong-token");
    let refused = wrk(&url, "wrong-token");
    let status = wrk(&url, common::TOKEN);
    let health = wrk(&svc.url("/health"), "none");
    println!(
        "wrk -t2 -c50 -d{SECONDS}s on one server (requests/s, p99):\n  401 (wrong token)       {:>9.0}/s  p99 {:>6.2} ms\n  GET /api/v2/jobs/{{id}}  {:>9.0}/s  p99 {:>6.2} ms  ratio {:.2}\n  GET /health             {:>9.0}/s  p99 {:>6.2} ms  ratio {:.2}",
        refused.rate,
        refused.p99_ms,
        status.rate,
        status.p99_ms,
        status.rate / refused.rate,
        health.rate,
        health.p99_ms,
        health.rate / refused.rate
    );
    let baseline = format!("{:.0}/s (401)", refused.rate);
    table::record(
        "GET /api/v2/jobs/{id}",
        &format!("{:.0}/s, p99 {:.1} ms", status.rate, status.p99_ms),
        &baseline,
        status.rate / refused.rate,
        Goal::AtLeast(0.6),
    );
    table::record(
        "GET /api/v2/jobs/{id} p99 (goal < 5 ms)",
        &format!("{:.2} ms", status.p99_ms),
        "5 ms",
        status.p99_ms / 5.0,
        Goal::AtMost(1.0),
    );
    table::record(
        "GET /health",
        &format!("{:.0}/s, p99 {:.1} ms", health.rate, health.p99_ms),
        &baseline,
        health.rate / refused.rate,
        Goal::AtLeast(0.8),
    );
}

/// The v1 status of a job under an agreement on a local chain, signed as Squid signs it
/// (one signature recovery a request), against that server's 401s.
async fn v1_signed_status() {
    let w = common::world::world().await;
    let dataset = w.dataset(|_| {}).await;
    let algorithm = w.algorithm().await;
    let consumer = w.consumer(3);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let job = consumer
        .start(terms.agreement_id, &brizo::squid::Algorithm::Did(algorithm))
        .await
        .unwrap();
    let status = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(status["status"], 70, "{status}");
    let v1 = url::Url::parse_with_params(
        &w.svc.url("/api/v1/brizo/services/compute"),
        consumer.query(terms.agreement_id, Some(&job)),
    )
    .unwrap()
    .to_string();
    let refused = wrk(&w.svc.url(&format!("/api/v2/jobs/{job}")), "wrong-token");
    let signed = wrk(&v1, "none");
    println!(
        "  v1 signed status        {:>9.0}/s  p99 {:>6.2} ms  ratio {:.2} (to {:.0}/s 401s of that server)",
        signed.rate,
        signed.p99_ms,
        signed.rate / refused.rate,
        refused.rate
    );
    table::record(
        "GET /api/v1/brizo/services/compute (signed)",
        &format!("{:.0}/s, p99 {:.1} ms", signed.rate, signed.p99_ms),
        &format!("{:.0}/s (401)", refused.rate),
        signed.rate / refused.rate,
        Goal::AtLeast(0.3),
    );
}
