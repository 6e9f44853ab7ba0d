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
