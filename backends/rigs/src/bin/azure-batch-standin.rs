//! The stand-in Azure Batch server as a process of its own, for `make try-azure`: NOT Azure
//! Batch, a test server that speaks its REST API and runs tasks on the local Docker engine
//! (see `brizo_test_rigs::azure_batch`). Prints its URL, then serves until killed.
//!
//! Usage: azure-batch-standin [--port PORT] [--job BATCH_JOB]...
//!        [--azurite PORT [--container NAME]... [--upload CONTAINER/BLOB=FILE]...]
//! `--job` makes Batch jobs on the stand-in's pool (as terraform/modules/azure makes its one);
//! `--azurite` names a running Azurite whose containers and blobs to create first.

use brizo_test_rigs::azure_batch::{self, BatchStandin};
use brizo_test_rigs::azurite::Azurite;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut port, mut jobs, mut azurite, mut containers, mut uploads) =
        (0u16, vec![], None, vec![], vec![]);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value().parse().expect("--port takes a number"),
            "--job" => jobs.push(value()),
            "--azurite" => azurite = Some(value().parse::<u16>().expect("--azurite takes a port")),
            "--container" => containers.push(value()),
            "--upload" => uploads.push(value()),
            other => panic!("unknown argument {other}; see the usage in the source"),
        }
    }
    if let Some(port) = azurite {
        let blob = Azurite::attach(port);
        for c in &containers {
            blob.create_container(c).unwrap_or_else(|e| panic!("{e}"));
        }
        for u in &uploads {
            let (target, file) = u.split_once('=').expect("--upload CONTAINER/BLOB=FILE");
            let (container, name) = target
                .split_once('/')
                .expect("--upload CONTAINER/BLOB=FILE");
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
            blob.put_blob(container, name, &data)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let standin = BatchStandin::start_on(port).unwrap_or_else(|e| panic!("{e}"));
    for job in &jobs {
        standin.add_job(job);
    }
    println!("{}", standin.url);
    eprintln!(
        "stand-in Azure Batch (not Azure) on {}: account {}, pool {}, API {}, jobs {:?}",
        standin.url,
        azure_batch::ACCOUNT,
        azure_batch::POOL,
        azure_batch::API_VERSION,
        jobs
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
