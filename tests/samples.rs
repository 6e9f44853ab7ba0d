//! Try before buying: a dataset's public sample, declared in its DDO by sha256 and uploaded
//! to the service, and `brizo consumer try` running an algorithm on it on the local Docker
//! engine, in the real job's image, layout and isolation. Real: anvil with the keeper
//! contracts 0.13.2, the service, Docker, the brizo CLI binary.

mod common;

use std::process::Command;

use brizo::assets::ddo::SampleFile;
use common::TOKEN;
use common::world::{World, world};

const SUM: &str = "import os, pathlib, socket\nfiles = [p for p in pathlib.Path('/data/inputs').rglob('*') if p.is_file()]\n\
total = sum(int(x) for p in files for x in p.read_text().split())\nprint('sum', total, 'of', len(files), 'file(s)', flush=True)\n\
try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); print('network: yes')\nexcept OSError:\n    print('network: none')\n\
print('uid', os.getuid())\npathlib.Path('/data/outputs/sum.txt').write_text(str(total))\n";

fn sample(name: &str, bytes: &[u8]) -> SampleFile {
    SampleFile {
        name: name.into(),
        size: bytes.len() as u64,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)),
    }
}

async fn upload(w: &World, did: &str, name: &str, bytes: &[u8]) {
    let res = w
        .svc
        .http
        .put(w.svc.url(&format!("/api/v2/samples/{did}/{name}")))
        .bearer_auth(TOKEN)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
}

fn try_on(w: &World, did: &str, dir: &std::path::Path) -> std::process::Output {
    let algorithm = dir.join("sum.py");
    std::fs::write(&algorithm, SUM).unwrap();
    Command::new(env!("CARGO_BIN_EXE_brizo"))
        .args(["consumer", "try", "--dataset", did, "--server", &w.svc.base])
        .arg("--algorithm")
        .arg(&algorithm)
        .arg("--download")
        .arg(dir.join("out"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn an_algorithm_is_tried_on_the_public_sample_as_the_real_job_would_run_it() {
    let w = world().await;
    let values = b"1\n2\n";
    let did = w
        .dataset(|t| t.sample = vec![sample("values.txt", values)])
        .await;
    upload(&w, &did, "values.txt", values).await;
    // Anyone can download the sample: it is public.
    let public = reqwest::get(
        w.svc
            .url(&format!("/api/v1/brizo/samples/{did}/values.txt")),
    )
    .await
    .unwrap();
    assert_eq!(public.status(), 200);
    assert_eq!(&public.bytes().await.unwrap()[..], values);

    let dir = tempfile::tempdir().unwrap();
    let out = try_on(&w, &did, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sample (1 + 2), not the real data (3 + 4 + 5), laid out as the real job's inputs.
    assert!(stdout.contains("| sum 3 of 1 file(s)"), "{stdout}");
    // The real job's isolation: no network, not root.
    assert!(stdout.contains("| network: none"), "{stdout}");
    assert!(stdout.contains("| uid 65534"), "{stdout}");
    assert!(stdout.contains("output sum.txt"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/sum.txt")).unwrap(),
        "3"
    );
}

#[tokio::test]
async fn a_sample_that_differs_from_its_ddo_or_a_dataset_without_one_is_not_tried() {
    let w = world().await;
    let did = w
        .dataset(|t| t.sample = vec![sample("values.txt", b"1\n2\n")])
        .await;
    upload(&w, &did, "values.txt", b"9\n9\n").await;
    let dir = tempfile::tempdir().unwrap();
    let out = try_on(&w, &did, dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match the sha256"), "{stderr}");

    let plain = w.dataset(|_| {}).await;
    let out = try_on(&w, &plain, dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("publishes no sample"), "{stderr}");

    // Sample names cannot leave the samples folder.
    let res = w
        .svc
        .http
        .put(w.svc.url(&format!("/api/v2/samples/{did}/..%2Fescape")))
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}
