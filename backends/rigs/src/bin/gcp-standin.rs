//! `make try-gcp`'s GCS and Google Batch: fake-gcs-server (real emulator) behind the checking
//! proxy, and the STAND-IN Batch server (test code; no Batch emulator exists), on fixed ports,
//! until killed.
//!
//!   gcp-standin <project root> <gcs port> <batch port> <bucket | gs://bucket/object=file>...

use std::path::PathBuf;

use brizo_test_rigs::gcp_batch::BatchStandin;
use brizo_test_rigs::gcs::Gcs;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: gcp-standin <project root> <gcs port> <batch port> <bucket>...");
        std::process::exit(2);
    }
    let root = PathBuf::from(&args[0]);
    let port = |s: &str| {
        s.parse::<u16>().unwrap_or_else(|_| {
            eprintln!("{s} is not a port");
            std::process::exit(2)
        })
    };
    let buckets: Vec<&str> = args[3..]
        .iter()
        .filter(|a| !a.starts_with("gs://"))
        .map(String::as_str)
        .collect();
    let gcs = Gcs::start(&root, port(&args[1]), &buckets).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    for seed in args[3..].iter().filter(|a| a.starts_with("gs://")) {
        let (url, file) = seed.split_once('=').unwrap_or((seed, ""));
        let (bucket, object) = url
            .trim_start_matches("gs://")
            .split_once('/')
            .unwrap_or_default();
        let bytes = std::fs::read(file).unwrap_or_else(|e| {
            eprintln!("{file}: {e}");
            std::process::exit(1)
        });
        gcs.put(bucket, object, &bytes).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    }
    let batch = BatchStandin::start_on(port(&args[2])).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    println!(
        "GCS (fake-gcs-server behind the checking proxy) on {}; Google Batch STAND-IN on {}",
        gcs.url, batch.url
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
