//! A burst of 50 submissions: every one accepted, run and accounted for.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Service, python_job};
use serde_json::Value;

#[tokio::test]
async fn fifty_submissions_are_all_accounted_for() {
    let svc = Service::start_with(&[("BRIZO_MAX_RUNNING_JOBS", "4")]).await;
    let submits = (0..50).map(|i| {
        let svc = &svc;
        async move {
            svc.submit(python_job(&format!(
                "open('/data/outputs/n.txt','w').write('{i}')"
            )))
            .await
        }
    });
    let ids: Vec<String> = futures::future::join_all(submits).await;
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        50,
        "job ids must be distinct"
    );
    for (i, id) in ids.iter().enumerate() {
        let job = svc.wait_finished(id, Duration::from_secs(600)).await;
        assert_eq!(job["outcome"], "succeeded", "{job}");
        let got = svc
            .get(&format!("/api/v2/jobs/{id}/outputs/n.txt"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(got, i.to_string(), "job {id} has another job's output");
    }
    let list: Vec<Value> = svc
        .get("/api/v2/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 50);
    for id in &ids {
        svc.wait_cleaned(id).await;
    }
    assert!(common::containers_of(&svc.instance()).is_empty());
    let leftovers = std::fs::read_dir(svc.data_dir().join("jobs"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "job folders remain");
}
