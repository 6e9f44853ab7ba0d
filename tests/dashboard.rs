//! The publisher's dashboard in a real browser: Debian's headless Chromium, driven over
//! WebDriver (Debian's chromedriver, started and stopped by PID here), against the real
//! service with a real chain (anvil + keeper contracts 0.13.2) and Docker. What a person sees
//! is checked: a job appears and finishes, its log streams in while it runs, stop works, an
//! approval from the page lets a waiting job run, markup shows as text; and the session's
//! guards hold: no cookie, no CSRF token, or another origin is refused. A screenshot of each
//! page goes to `<target>/tmp/dashboard/`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brizo::squid::Algorithm;
use common::TOKEN;
use common::world::{PATIENCE, World, world};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

struct Driver {
    child: Child,
    _profile: tempfile::TempDir,
    client: Client,
    shots: PathBuf,
}

impl Driver {
    async fn start() -> Option<Driver> {
        if !std::path::Path::new("/usr/bin/chromedriver").exists() {
            eprintln!(
                "skipped: no /usr/bin/chromedriver (scripts/test-deps.sh installs chromium-driver)"
            );
            return None;
        }
        let port = common::free_port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display())]}),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver did not start a session: {e}"),
            }
        };
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&shots).unwrap();
        Some(Driver {
            child,
            _profile: profile,
            client,
            shots,
        })
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// The text of the first element matching `css`, once `ok` holds for it.
    async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = e.text().await
                && ok(&text)
            {
                return text;
            }
            if Instant::now() > deadline {
                let _ = self
                    .shot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                panic!(
                    "{what}: {css} never showed what was expected; page:\n{}",
                    self.client.source().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element, found again when a live update replaced it in between.
    async fn click(&self, css: &str) {
        for _ in 0..20 {
            let found = self
                .client
                .wait()
                .at_most(PATIENCE)
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match found.click().await {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
        panic!("{css} kept being replaced");
    }

    async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn job_status(w: &World, id: &str) -> Value {
    w.svc.job(id).await
}

/// The whole story in one browser session, a step at a time: each step leaves what the
/// next one looks at (the finished job is rerun, its image digest shown for approval).
#[tokio::test]
async fn the_dashboard_shows_and_steers_jobs_in_a_real_browser() {
    let Some(d) = Driver::start().await else {
        return;
    };
    let w = world().await;
    let cookie = signs_in(&d, &w).await;
    let id = a_job_streams_its_log_and_finishes(&d, &w).await;
    markup_in_an_image_name_is_text(&d, &w).await;
    stops_from_the_page(&d, &w).await;
    reruns_and_deletes_from_the_page(&d, &w, &id).await;
    approves_from_the_page(&d, &w, &id).await;
    shows_the_other_pages(&d, &w).await;
    actions_need_the_session_and_this_origin(&w, &cookie).await;
    d.close().await;
}

/// Nothing of the dashboard without a session; a wrong token is refused on the page, the
/// right one opens the jobs page with a strict, HTTP-only session cookie.
async fn signs_in(d: &Driver, w: &World) -> fantoccini::cookies::Cookie<'static> {
    let base = &w.svc.base;
    let plain = reqwest::Client::new();
    for path in ["/ui/api/jobs", "/ui/api/backends", "/ui/static/app.js"] {
        let res = plain.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
    }
    d.client.goto(&format!("{base}/ui")).await.unwrap();
    d.click("#token").await;
    d.client
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("not-the-token")
        .await
        .unwrap();
    d.click("#signin").await;
    d.wait_text(
        "#error",
        |t| t.contains("not the operator token"),
        "wrong token",
    )
    .await;
    d.client
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    d.shot("login").await;
    d.click("#signin").await;
    d.wait_text("h2", |t| t == "Jobs", "the jobs page").await;
    let cookie = d.client.get_named_cookie("brizo_ui").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    cookie
}

/// A job appears, its log streams in while it runs, and it reaches "finished" with its
/// receipt verified. A log line with markup shows as text. Returns the job's id.
async fn a_job_streams_its_log_and_finishes(d: &Driver, w: &World) -> String {
    let code = "import time\nprint('<script>window.pwned=1</script><b>bold</b>', flush=True)\nfor i in range(10):\n    print('line', i, flush=True)\n    time.sleep(1)\n";
    let id = w.svc.submit(common::python_job(code)).await;
    let row = format!("tr[data-job='{id}'] td.status");
    d.wait_text(&row, |t| !t.is_empty(), "the new job's row")
        .await;
    d.shot("jobs").await;
    d.click(&format!("tr[data-job='{id}'] a")).await;
    d.wait_text("#log", |t| t.contains("line 1"), "the live log")
        .await;
    let status = job_status(w, &id).await;
    assert_eq!(
        status["status"], 40,
        "the log streamed in before the job ended: {status}"
    );
    d.shot("job-running").await;
    d.wait_text("#status", |t| t.starts_with("70"), "finished")
        .await;
    let log = d
        .wait_text("#log", |t| t.contains("line 3"), "the whole log")
        .await;
    assert!(
        log.contains("<script>window.pwned=1</script><b>bold</b>"),
        "{log}"
    );
    assert!(
        d.client
            .find(Locator::Css("#log script, #log b"))
            .await
            .is_err()
    );
    let pwned = d
        .client
        .execute("return window.pwned === undefined", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!(true), "the log's markup ran");
    d.wait_text(
        "#verification",
        |t| t.contains("passed signature"),
        "receipt verification",
    )
    .await;
    d.shot("job-finished").await;

    id
}

/// An image name with markup is text too.
async fn markup_in_an_image_name_is_text(d: &Driver, w: &World) {
    let base = &w.svc.base;
    let marked = w
        .svc
        .post("/api/v2/jobs")
        .json(&json!({"image": "<img/src=x/onerror=window.pwned=2>", "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": "print(1)"}}))
        .send()
        .await
        .unwrap();
    let marked: Value = marked.json().await.unwrap();
    let marked_id = marked["jobId"].as_str().unwrap().to_string();
    d.client.goto(&format!("{base}/ui#/jobs")).await.unwrap();
    let image = d
        .wait_text(
            &format!("tr[data-job='{marked_id}'] td.image"),
            |t| !t.is_empty(),
            "the marked image",
        )
        .await;
    assert_eq!(image, "<img/src=x/onerror=window.pwned=2>");
    assert!(d.client.find(Locator::Css("td.image img")).await.is_err());
}

async fn stops_from_the_page(d: &Driver, w: &World) {
    let base = &w.svc.base;
    let long = w
        .svc
        .submit(common::python_job("import time\ntime.sleep(120)"))
        .await;
    w.svc.wait_status(&long, 40, PATIENCE).await;
    d.client
        .goto(&format!("{base}/ui#/job/{long}"))
        .await
        .unwrap();
    d.click("#stop").await;
    let stopped = w.svc.wait_finished(&long, PATIENCE).await;
    assert_eq!(stopped["outcome"], "stopped", "{stopped}");
    d.wait_text("#outcome", |t| t.contains("stopped"), "stopped on the page")
        .await;
}

/// Rerun a finished job from the page: the page goes to the new job, which runs the same
/// image; then delete it from the page (the browser's confirmation answered yes): it is gone.
async fn reruns_and_deletes_from_the_page(d: &Driver, w: &World, id: &str) {
    let base = &w.svc.base;
    d.client
        .goto(&format!("{base}/ui#/job/{id}"))
        .await
        .unwrap();
    d.wait_text("h2", |t| t.contains(id), "the finished job's page")
        .await;
    d.click("#rerun").await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let rerun = loop {
        let hash = d
            .client
            .execute("return location.hash", vec![])
            .await
            .unwrap();
        let hash = hash.as_str().unwrap_or_default().to_string();
        if let Some(new) = hash.strip_prefix("#/job/")
            && new != id
        {
            break new.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no rerun: {hash}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let rerun_done = w.svc.wait_finished(&rerun, PATIENCE).await;
    assert_eq!(rerun_done["outcome"], "succeeded", "{rerun_done}");
    assert_eq!(
        rerun_done["imageDigest"],
        job_status(w, id).await["imageDigest"]
    );
    d.wait_text("#status", |t| t.starts_with("70"), "the rerun finished")
        .await;

    d.client
        .execute("window.confirm = () => true", vec![])
        .await
        .unwrap();
    d.click("#delete").await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let res = w
            .svc
            .get(&format!("/api/v2/jobs/{rerun}"))
            .send()
            .await
            .unwrap();
        if res.status() == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not deleted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An approval from the page lets a waiting job run; the page shows the code and the
/// image's digest (that of the job `ran`, the same image) before deciding.
async fn approves_from_the_page(d: &Driver, w: &World, ran: &str) {
    let base = &w.svc.base;
    let dataset = w.dataset(|t| t.requires_approval = true).await;
    let algorithm = w.algorithm().await;
    let consumer = w.consumer(3);
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let gated = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm))
        .await
        .unwrap();
    d.client
        .goto(&format!("{base}/ui#/decisions"))
        .await
        .unwrap();
    d.wait_text(
        "#decisions",
        |t| t.contains(&gated[..12]),
        "the approvals queue",
    )
    .await;
    d.shot("decisions").await;
    d.click(&format!("#decisions a[href='#/job/{gated}']"))
        .await;
    d.wait_text(
        "#algorithm-code",
        |t| t.contains("sum.txt"),
        "the code to approve",
    )
    .await;
    // The image's digest is shown before deciding.
    let digest = job_status(w, ran).await["imageDigest"]
        .as_str()
        .unwrap()
        .to_string();
    d.wait_text(
        "#image-digest",
        |t| t == digest,
        "the image digest to approve",
    )
    .await;
    d.shot("approval").await;
    d.click("#approve").await;
    let done = w.wait_finished(&consumer, &terms, &gated).await;
    assert_eq!(done["settlement"]["state"], "paid", "{done}");
}

async fn shows_the_other_pages(d: &Driver, w: &World) {
    let base = &w.svc.base;
    for (page, css) in [
        ("backends", "#backends"),
        ("assets", "#assets"),
        ("charts", "#chart-outcomes"),
    ] {
        d.client.goto(&format!("{base}/ui#/{page}")).await.unwrap();
        d.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        d.shot(page).await;
    }
    d.client
        .goto(&format!("{base}/ui#/backends"))
        .await
        .unwrap();
    let backends = d
        .wait_text("#backends", |t| t.contains("docker"), "the backends table")
        .await;
    assert!(backends.contains("ok"), "{backends}");
}

/// Actions need the session's CSRF token and this origin: a cross-site POST is refused.
async fn actions_need_the_session_and_this_origin(
    w: &World,
    cookie: &fantoccini::cookies::Cookie<'static>,
) {
    let base = &w.svc.base;
    let plain = reqwest::Client::new();
    let session = format!("brizo_ui={}", cookie.value());
    let other = w
        .svc
        .submit(common::python_job("import time\ntime.sleep(60)"))
        .await;
    let attempts = [
        ("no CSRF token", vec![("Cookie", session.clone())], 403),
        (
            "another origin",
            vec![
                ("Cookie", session.clone()),
                ("Origin", "http://evil.example".to_string()),
                ("X-CSRF-Token", "whatever".to_string()),
            ],
            403,
        ),
        ("no cookie", vec![], 401),
    ];
    for (what, headers, expected) in attempts {
        let mut req = plain.post(format!("{base}/ui/api/jobs/{other}/stop"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), expected, "{what}");
    }
    assert_eq!(job_status(w, &other).await["stopRequested"], false);
    let _ = w
        .svc
        .post(&format!("/api/v2/jobs/{other}/stop"))
        .send()
        .await;
}
