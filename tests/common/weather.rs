//! The weather summary the cloud backends' end-to-end tests run where the data lies: its
//! dataset, its algorithm, the job, and what a finished run must show.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;

use super::{IMAGE, Service};

/// The dataset: three days, a mean of 2.33.
pub const CSV: &[u8] = b"date,temp\n2026-01-01,3.5\n2026-01-02,4.5\n2026-01-03,-1.0\n";

/// The algorithm: says how many rows it read and as which user, writes the mean.
pub const SUMMARY: &str = r#"
import pathlib, os
rows = pathlib.Path('/data/inputs/weather/0').read_text().splitlines()[1:]
temps = [float(r.split(',')[1]) for r in rows]
print('rows', len(rows), 'as uid', os.getuid(), flush=True)
pathlib.Path('/data/outputs/summary.txt').write_text('mean %.2f\n' % (sum(temps) / len(temps)))
"#;

/// `code` on the dataset at `input`, named `weather`.
pub fn job_on(code: &str, input: &str) -> Value {
    json!({"image": IMAGE, "entrypoint": "python3 $ALGO",
        "algorithm": {"rawcode": code},
        "inputs": [{"url": input, "name": "weather"}]})
}

/// Checks the summary a finished `job` stored (`stored`: read back from its results store, or
/// where the test cannot read it, the bytes it must be) is the mean, and that the job reports
/// its size and hash; gives the job's entry for it.
pub fn assert_summary_stored(job: &Value, stored: &[u8]) -> Value {
    assert_eq!(stored, b"mean 2.33\n");
    let reported = job["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "summary.txt")
        .expect("summary.txt listed")
        .clone();
    assert_eq!(reported["size"], stored.len(), "{reported}");
    assert_eq!(
        reported["sha256"],
        hex::encode(sha2::Sha256::digest(stored)),
        "{reported}"
    );
    reported
}

/// The same service sends the summary on local data to Docker, whatever else it routes to
/// its cloud backend.
pub async fn runs_local_data_on_docker(svc: &Service) {
    let local = svc.dataset("weather.csv", std::str::from_utf8(CSV).unwrap());
    let id = svc.submit(job_on(SUMMARY, &local)).await;
    let job = svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["outcome"], "succeeded", "{job}");
    assert_eq!(job["backend"], "local", "{job}");
}

/// Works six seconds, then writes `done.txt` and says `finished`: long enough to kill the
/// service under it.
pub const SLOW: &str = "import time, pathlib\nprint('working', flush=True)\ntime.sleep(6)\npathlib.Path('/data/outputs/done.txt').write_text('done')\nprint('finished', flush=True)\n";

/// Writes 2 MiB, over a cap of `max_output_mb = 1`.
pub const BIG: &str = "import pathlib\npathlib.Path('/data/outputs/big.bin').write_bytes(b'x' * (2 << 20))\nprint('wrote', flush=True)\n";

/// Starts [`SLOW`] on `input` and waits until it runs; gives its id.
pub async fn running_slow_job(svc: &Service, input: &str) -> String {
    let id = svc.submit(job_on(SLOW, input)).await;
    svc.wait_status(&id, 40, Duration::from_secs(120)).await;
    id
}

/// Kills the service (`kill -9`) under a job that runs on the remote backend
/// ([`running_slow_job`]): the restarted service finds it there again and finishes it, with
/// its log intact (what it printed before the kill and after). Gives the job's record; the
/// caller checks `done.txt` in its results store.
pub async fn finished_across_a_restart(svc: &mut Service, id: &str) -> Value {
    svc.kill9();
    svc.spawn().await;
    let job = svc.wait_finished(id, Duration::from_secs(180)).await;
    assert_eq!(job["outcome"], "succeeded", "{job}\n{}", svc.log());
    let logs = svc.logs(id).await;
    assert!(
        logs.contains("working") && logs.contains("finished"),
        "{logs}"
    );
    job
}

/// An output over the publisher's cap (the service runs with `max_output_mb = 1`) fails the
/// job with the reason in its log and no outputs listed. Gives its id; the caller checks
/// that nothing reached its results store.
pub async fn output_over_the_cap_fails(svc: &Service, input: &str) -> String {
    let id = svc.submit(job_on(BIG, input)).await;
    let job = svc.wait_finished(&id, Duration::from_secs(180)).await;
    assert_eq!(job["outcome"], "failed", "{job}");
    assert!(job["outputs"].as_array().unwrap().is_empty(), "{job}");
    let logs = svc.logs(&id).await;
    assert!(
        logs.contains("over the publisher's cap of 1048576 bytes"),
        "{logs}"
    );
    id
}
