//! Crashes and outages at the worst moments, on the real parts: the service killed with
//! SIGKILL in each phase of a paid job in turn, and the chain node unreachable during
//! settlement. Every job must end exactly once, its agreement be settled with exactly one
//! transaction per step, and nothing (container, folder, disk) be left behind.
//!
//! Where the service stops is chosen with fault injection (cargo feature `failpoints`,
//! `FAILPOINTS=brizo::<point>=return`): the job holds at that line, as if the process had
//! frozen there, and the test kills the process. Real: anvil with the keeper contracts
//! 0.13.2, the Docker engine, the service binary.

mod common;

use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::providers::Provider;
use brizo::squid::{Algorithm, Consumer};
use common::world::{PATIENCE, World, world};
use reqwest::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Where the job is held when the service is killed, and the phase it is in then.
const POINTS: [(&str, &str); 6] = [
    (
        "brizo::stage",
        "staging: the algorithm in place, the inputs not yet",
    ),
    ("brizo::follow", "running: the container started"),
    (
        "brizo::filter",
        "filtering: outputs collected, not yet listed",
    ),
    (
        "brizo::publish",
        "publishing: outputs stored, the job not yet finished",
    ),
    (
        "brizo::settle",
        "settling: compute fulfilled on chain, reward not yet released",
    ),
    (
        "brizo::receipt",
        "issuing the receipt: anchored on chain, not yet recorded",
    ),
];

async fn tx_count(consumer: &Consumer, who: Address) -> u64 {
    consumer.chain.get_transaction_count(who).await.unwrap()
}

/// Waits until the service's log says the job is held at `point`.
async fn held_at(w: &World, point: &str, job: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = w.svc.log();
        if log
            .lines()
            .any(|l| l.contains(&format!("failpoint {point} holds the job")) && l.contains(job))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} never reached {point}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn receipt_issued(
    w: &World,
    consumer: &Consumer,
    agreement: alloy::primitives::B256,
    job: &str,
) {
    let deadline = Instant::now() + PATIENCE;
    while consumer
        .call(Method::GET, agreement, Some(job))
        .await
        .unwrap()[0]["receiptUrl"]
        == ""
    {
        assert!(Instant::now() < deadline, "no receipt:\n{}", w.svc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_crash_in_any_phase_ends_the_job_once_and_settles_it_once() {
    let mut w = world().await;
    let dataset = w.dataset(|_| {}).await;
    let algorithm = w.algorithm().await;
    let consumer = w.consumer(3);
    let provider = w.chain.accounts[2].address;
    let instance = w.svc.instance();
    for (point, phase) in POINTS {
        w.svc.kill9();
        w.svc
            .set_env("FAILPOINTS", Some(&format!("{point}=return")));
        w.svc.spawn().await;
        let terms = consumer.order(&dataset, 0).await.unwrap();
        let before = tx_count(&consumer, provider).await;
        let job = consumer
            .start(terms.agreement_id, &Algorithm::Did(algorithm.clone()))
            .await
            .unwrap();
        held_at(&w, point, &job).await;
        w.svc.kill9();
        w.svc.set_env("FAILPOINTS", None);
        w.svc.spawn().await;

        let status = w.wait_finished(&consumer, &terms, &job).await;
        assert_eq!(status["status"], 70, "killed in {phase}: {status}");
        assert_eq!(
            status["settlement"]["state"], "paid",
            "killed in {phase}: {status}"
        );
        receipt_issued(&w, &consumer, terms.agreement_id, &job).await;
        let job_record = w.svc.job(&job).await;
        assert_eq!(
            job_record["outcome"], "succeeded",
            "killed in {phase}: {job_record}"
        );
        // One job under the agreement, ended once.
        let listed = consumer
            .call(Method::GET, terms.agreement_id, None)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "killed in {phase}");
        let ended = w
            .svc
            .log()
            .lines()
            .filter(|l| l.contains("job finished") && l.contains(&job))
            .count();
        assert_eq!(ended, 1, "killed in {phase}: the job ended {ended} times");
        // Exactly three transactions: the compute condition, the reward, the receipt's anchor.
        assert_eq!(
            tx_count(&consumer, provider).await,
            before + 3,
            "killed in {phase}: a transaction was sent twice (or not at all)"
        );
        // Nothing left: no container, no folder, no mounted disk.
        w.svc.wait_cleaned(&job).await;
        assert!(
            common::containers_of(&instance).is_empty(),
            "killed in {phase}: containers left"
        );
        assert!(
            !w.svc.data_dir().join("jobs").join(&job).exists(),
            "killed in {phase}: folder left"
        );
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(
            !mounts.contains(&job),
            "killed in {phase}: disk left mounted"
        );
    }
}

/// A TCP relay to the chain node that can be cut: while it is cut, connections are refused,
/// as when the node is down.
struct Relay {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    async fn to(target: &str) -> Relay {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let gate = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !gate.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let target = target.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    // A connection kept alive across the cut is cut with it.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = async {
                            while gate.load(std::sync::atomic::Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        } => {}
                    }
                });
            }
        });
        Relay { port, open }
    }
    fn set(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_chain_node_down_during_settlement_settles_once_when_it_is_back() {
    // The service reaches the node through the relay; the test's own clients go straight.
    let mut w = world().await;
    let relay = Relay::to(&w.chain.url).await;
    let relayed = format!("http://127.0.0.1:{}", relay.port);
    w.svc.kill9();
    w.svc.set_env("BRIZO_CHAIN__KEEPER_URL", Some(&relayed));
    w.svc.spawn().await;
    let dataset = w.dataset(|_| {}).await;
    let slow = {
        let url = w.svc.dataset(
            "algorithms/slow.py",
            "import time\ntime.sleep(2)\nopen('/data/outputs/done.txt', 'w').write('done')\n",
        );
        let (image, tag) = common::IMAGE.split_once(':').unwrap();
        w.publish(brizo::assets::publish::Asset::Algorithm(
            brizo::assets::publish::AlgorithmTerms {
                name: "slow".into(),
                file: url,
                image: image.into(),
                tag: tag.into(),
                entrypoint: "python3 $ALGO".into(),
            },
        ))
        .await
    };
    let consumer = w.consumer(3);
    let provider = w.chain.accounts[2].address;
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let before = tx_count(&consumer, provider).await;
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(slow))
        .await
        .unwrap();
    w.svc.wait_status(&job, 40, PATIENCE).await;
    relay.set(false);
    // The run ends and is published; settlement waits for the node, the job is not lost.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let record = w.svc.job(&job).await;
        if record["status"] == 70 {
            assert!(
                record["settlement"].is_null(),
                "settled without a chain: {record}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w.svc.job(&job).await["settlement"].is_null());
    assert_eq!(tx_count(&consumer, provider).await, before);
    assert!(
        w.svc.log().contains("unreachable") || w.svc.log().contains("error sending request"),
        "the outage is not in the log:\n{}",
        w.svc.log()
    );
    relay.set(true);
    let status = w.wait_finished(&consumer, &terms, &job).await;
    assert_eq!(status["settlement"]["state"], "paid", "{status}");
    receipt_issued(&w, &consumer, terms.agreement_id, &job).await;
    assert_eq!(tx_count(&consumer, provider).await, before + 3);
}
