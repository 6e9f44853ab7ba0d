//! schemathesis (PyPI) against the served OpenAPI document: a bounded run (a few hundred cases,
//! fixed seed) of examples, fuzzing and coverage phases with every check but the acceptance of
//! schema-valid data (the service validates more than a schema can say: image names, URLs).
//! 0 server errors, 0 undocumented statuses, responses matching their schemas, no endpoint
//! answering without the token, 405 with `Allow` for other methods. Needs `st` on PATH
//! (`scripts/test-deps.sh` installs it); `make fuzz` runs it longer.

mod common;

use common::{Service, TOKEN};

#[tokio::test]
async fn the_v2_api_holds_to_its_openapi_document() {
    let svc = Service::start().await;
    let examples = std::env::var("BRIZO_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    let seed = std::env::var("BRIZO_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261201".into());
    let out = tokio::process::Command::new("st")
        // Its cache of crashes goes to the working folder: the test's, not the checkout.
        .current_dir(svc.data_dir())
        .args(["run", &svc.url("/api/v2/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--phases", "examples,fuzzing,coverage", "--no-color"])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("running schemathesis (`st`): {e}; install it with scripts/test-deps.sh")
        });
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(
        report.contains(" passed"),
        "schemathesis ran no case:\n{report}"
    );
    println!(
        "{}",
        report
            .lines()
            .filter(|l| l.contains("generated") || l.contains("Seed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
