//! The stand-in Azure Batch server as a process of its own, for `make try-azure`: NOT Azure
//! Batch, a test server that speaks its REST API and runs tasks on the local Docker engine
//! (see `brizo_test_rigs::azure_batch`). Prints its URL, then serves until killed.
//! Usage: azure-batch-standin [PORT]

fn main() {
    let port = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT is a number"))
        .unwrap_or(0);
    let standin = brizo_test_rigs::azure_batch::BatchStandin::start_on(port)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{}", standin.url);
    eprintln!(
        "stand-in Azure Batch (not Azure) on {}: account {}, pool {}, API {}",
        standin.url,
        brizo_test_rigs::azure_batch::ACCOUNT,
        brizo_test_rigs::azure_batch::POOL,
        brizo_test_rigs::azure_batch::API_VERSION
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
