//! A STAND-IN for Google Batch (and for the one Cloud Logging call brizo makes), for tests,
//! the benchmark and `make try-gcp`: Google Batch has no emulator. It is test code, not Google:
//! it speaks the Batch v1 REST API as the discovery document defines it (revision
//! [`REVISION`]) for the methods brizo uses (`projects.locations.jobs` create, get, delete,
//! list and `jobs.taskGroups.tasks.get`), serves Cloud Logging v2 `entries:list` of the jobs'
//! `batch_task_logs`, and runs each job's container runnable with `docker run` on the local
//! engine, the way moto does for AWS Batch.
//!
//! What it checks of every request, so that the client is right against Google and not only
//! against this server: a bearer token that is a valid self-signed JWT of the test service
//! account ([`crate::gcs::check_jwt`]), the path and query parameters the method defines, and
//! each request body against the discovery document's schemas (`fixtures/google-batch/`, a
//! copy of the relevant parts with its source and revision): types and formats (int64 as
//! strings, google-duration), enums, no property the schema does not define, and no output-only
//! property. A request that fails is refused with 400 INVALID_ARGUMENT, as Batch would, and
//! kept in [`BatchStandin::violations`].
//!
//! What it does not do: VMs, instance templates, networks or service accounts (they are
//! checked for form, then every job runs at once on this host), retries, task arrays,
//! script runnables. Containers run with host networking, so a job reaches the GCS proxy on
//! 127.0.0.1. A deleted job stays `DELETION_IN_PROGRESS` for a few seconds (Google's take
//! minutes while the VMs go), then is gone.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::schema::{self, Dialect};

/// The revision of the discovery document the excerpt is of.
pub const REVISION: &str = "20240411";
/// The discovery document excerpt the requests are checked against.
pub const DISCOVERY: &str = include_str!("../fixtures/google-batch/batch-v1-20240411.excerpt.json");
/// The exit code Batch gives a task cut off at its `maxRunDuration`.
pub const EXIT_MAX_RUN_DURATION: i64 = 50005;

pub struct BatchStandin {
    /// `http://127.0.0.1:PORT`: the Batch endpoint, and the Cloud Logging one.
    pub url: String,
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
    watcher: std::process::Child,
}

struct State {
    schemas: Value,
    email: String,
    label: String,
    jobs: Mutex<HashMap<String, Arc<Mutex<Job>>>>,
    entries: Mutex<Vec<Value>>,
    operations: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
    creates: Mutex<Vec<String>>,
    throttle: AtomicUsize,
    sequence: AtomicU64,
    /// How long a deleted job stays `DELETION_IN_PROGRESS`.
    linger: Duration,
}

struct Job {
    /// Resource name `projects/P/locations/L/jobs/ID`.
    name: String,
    id: String,
    uid: String,
    body: Value,
    created: String,
    state: &'static str,
    events: Vec<Value>,
    task_state: &'static str,
    task_events: Vec<Value>,
    delete: bool,
    updated: String,
}

impl BatchStandin {
    /// Starts the server on a free port of 127.0.0.1.
    pub fn start() -> Result<BatchStandin, String> {
        Self::start_on(0)
    }

    pub fn start_on(port: u16) -> Result<BatchStandin, String> {
        let doc: Value =
            serde_json::from_str(DISCOVERY).map_err(|e| format!("the discovery excerpt: {e}"))?;
        let label = format!("{}-{}", std::process::id(), crate::free_port());
        let state = Arc::new(State {
            schemas: doc["schemas"].clone(),
            email: crate::gcs::service_account_email(),
            label: label.clone(),
            jobs: Mutex::new(HashMap::new()),
            entries: Mutex::new(vec![]),
            operations: Mutex::new(vec![]),
            violations: Mutex::new(vec![]),
            creates: Mutex::new(vec![]),
            throttle: AtomicUsize::new(0),
            sequence: AtomicU64::new(0),
            linger: Duration::from_secs(5),
        });
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("binding the stand-in: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = crate::serve(listener, state.clone(), handle, 64 << 20)?;
        let watcher = crate::reap_containers_after_exit(&format!("brizo.gcp-standin={label}"))?;
        Ok(BatchStandin {
            url: format!("http://{addr}"),
            state,
            server,
            watcher,
        })
    }

    /// Requests refused for not being what the discovery document defines, in words.
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Every request as `METHOD /path`, in order.
    pub fn operations(&self) -> Vec<String> {
        self.state.operations.lock().unwrap().clone()
    }

    /// Answers the next `n` requests with 429 RESOURCE_EXHAUSTED (after checking them).
    pub fn throttle(&self, n: usize) {
        self.state.throttle.store(n, Ordering::SeqCst);
    }

    /// How many times a job of this id was asked for (jobs.create), accepted or not.
    pub fn creates(&self, id: &str) -> usize {
        self.state
            .creates
            .lock()
            .unwrap()
            .iter()
            .filter(|j| *j == id)
            .count()
    }

    /// The body a job was created with, as the client sent it.
    pub fn job_body(&self, id: &str) -> Option<Value> {
        let jobs = self.state.jobs.lock().unwrap();
        let job = jobs.get(id)?.clone();
        drop(jobs);
        let body = job.lock().unwrap().body.clone();
        Some(body)
    }

    /// Checks `value` against the discovery document's schema `name` (for tests of the checker).
    pub fn check(&self, name: &str, value: &Value) -> Vec<String> {
        validate(&self.state.schemas, name, value, name)
    }
}

impl Drop for BatchStandin {
    fn drop(&mut self) {
        for job in self.state.jobs.lock().unwrap().values() {
            job.lock().unwrap().delete = true;
        }
        drop(self.server.stop(false));
        crate::remove_containers(&format!("brizo.gcp-standin={}", self.state.label));
        let _ = self.watcher.kill();
        let _ = self.watcher.wait();
    }
}

/// Google's error body.
fn error(http: u16, status: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(http).unwrap()).json(json!({
        "error": {"code": http, "message": message, "status": status}
    }))
}

/// The refusal Batch answers a request without a valid service account token, if any.
fn authentication_refusal(state: &State, req: &HttpRequest) -> Option<HttpResponse> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(token) = auth.strip_prefix("Bearer ") else {
        return Some(state.refuse(
            401,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential.",
        ));
    };
    if let Err(why) = crate::gcs::check_jwt(token, &state.email, SystemTime::now()) {
        return Some(state.refuse(401, "UNAUTHENTICATED", &why));
    }
    None
}

/// A query parameter the method does not define (nor any method's system parameters), if any.
fn unknown_parameter<'q>(
    method: &str,
    parts: &[&str],
    query: &'q [(String, String)],
) -> Option<&'q str> {
    // The query parameters each method defines (and the system parameters of every method).
    let allowed: &[&str] = match (method, parts) {
        ("POST", ["v1", "projects", _, "locations", _, "jobs"]) => &["jobId", "requestId"],
        ("DELETE", ["v1", "projects", _, "locations", _, "jobs", _]) => &["reason", "requestId"],
        ("GET", ["v1", "projects", _, "locations", _, "jobs"]) => {
            &["filter", "orderBy", "pageSize", "pageToken"]
        }
        _ => &[],
    };
    query.iter().map(|(k, _)| k.as_str()).find(|k| {
        !allowed.contains(k)
            && !["alt", "fields", "prettyPrint", "quotaUser", "$.xgafv"].contains(k)
    })
}

async fn handle(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<State>>) -> HttpResponse {
    let state = state.get_ref().clone();
    state
        .operations
        .lock()
        .unwrap()
        .push(format!("{} {}", req.method(), req.path()));
    if let Some(refused) = authentication_refusal(&state, &req) {
        return refused;
    }
    let query = crate::gcs::parse_query(req.query_string());
    let parts: Vec<String> = req
        .path()
        .trim_matches('/')
        .split('/')
        .map(crate::gcs::decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let method = req.method().as_str();
    if let Some(k) = unknown_parameter(method, &parts, &query) {
        return state.refuse(
            400,
            "INVALID_ARGUMENT",
            &format!("{method} {}: unknown query parameter {k:?}", req.path()),
        );
    }
    if state
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Job requests' (stand-in throttling).",
        );
    }
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match (method, parts.as_slice()) {
        ("POST", ["v1", "projects", p, "locations", l, "jobs"]) => {
            state.create(&req, p, l, q("jobId"), &body)
        }
        ("GET", ["v1", "projects", p, "locations", l, "jobs"]) => {
            state.list(p, l, q("filter"), q("pageSize"))
        }
        ("GET", ["v1", "projects", _, "locations", _, "jobs", id]) => state.get(id),
        ("DELETE", ["v1", "projects", _, "locations", _, "jobs", id]) => state.delete(id),
        (
            "GET",
            [
                "v1",
                "projects",
                _,
                "locations",
                _,
                "jobs",
                id,
                "taskGroups",
                group,
                "tasks",
                n,
            ],
        ) => state.task(id, group, n),
        ("POST", ["v2", "entries:list"]) => state.entries(&req, &body),
        _ => error(
            404,
            "NOT_FOUND",
            &format!("the stand-in does not serve {method} {}", req.path()),
        ),
    }
}

impl State {
    fn refuse(&self, http: u16, status: &str, message: &str) -> HttpResponse {
        self.violations
            .lock()
            .unwrap()
            .push(format!("{status}: {message}"));
        error(http, status, message)
    }

    fn json_body(&self, req: &HttpRequest, body: &[u8]) -> Result<Value, Box<HttpResponse>> {
        let kind = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !kind.starts_with("application/json") {
            return Err(Box::new(self.refuse(
                400,
                "INVALID_ARGUMENT",
                &format!("Content-Type {kind:?} is not application/json"),
            )));
        }
        serde_json::from_slice(body).map_err(|e| {
            Box::new(self.refuse(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload: {e}"),
            ))
        })
    }

    fn create(
        self: &Arc<Self>,
        req: &HttpRequest,
        project: &str,
        location: &str,
        job_id: Option<String>,
        body: &[u8],
    ) -> HttpResponse {
        let job = match self.json_body(req, body) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let errors = validate(&self.schemas, "Job", &job, "job");
        let id = job_id.unwrap_or_default();
        self.creates.lock().unwrap().push(id.clone());
        if !errors.is_empty() {
            return self.refuse(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid Job: {}", errors.join("; ")),
            );
        }
        if let Err(why) = check_job_id(&id) {
            return self.refuse(400, "INVALID_ARGUMENT", &format!("job_id: {why}"));
        }
        let max_run = match what_the_standin_runs(&job) {
            Ok(max_run) => max_run,
            Err(why) => return self.refuse(400, "INVALID_ARGUMENT", &why),
        };
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.contains_key(&id) {
            return error(
                409,
                "ALREADY_EXISTS",
                &format!("Job {id} already exists in projects/{project}/locations/{location}"),
            );
        }
        let name = format!("projects/{project}/locations/{location}/jobs/{id}");
        let created = now();
        let uid = format!(
            "{}-{:08x}-{:04x}",
            &id.chars().take(48).collect::<String>(),
            self.sequence.fetch_add(1, Ordering::SeqCst),
            std::process::id() & 0xffff
        );
        let record = Arc::new(Mutex::new(Job {
            name: name.clone(),
            id: id.clone(),
            uid,
            body: job,
            created: created.clone(),
            state: "QUEUED",
            events: vec![],
            task_state: "PENDING",
            task_events: vec![],
            delete: false,
            updated: created,
        }));
        jobs.insert(id, record.clone());
        drop(jobs);
        let view = render(&record.lock().unwrap());
        let state = self.clone();
        std::thread::spawn(move || run(state, record, max_run));
        HttpResponse::Ok().json(view)
    }

    fn job(&self, id: &str) -> Option<Arc<Mutex<Job>>> {
        self.jobs.lock().unwrap().get(id).cloned()
    }

    fn get(&self, id: &str) -> HttpResponse {
        match self.job(id) {
            Some(job) => HttpResponse::Ok().json(render(&job.lock().unwrap())),
            None => error(404, "NOT_FOUND", &format!("Job not found: {id}")),
        }
    }

    /// jobs.list, with the `labels.KEY="VALUE"` filter (the only form the stand-in reads).
    fn list(
        &self,
        project: &str,
        location: &str,
        filter: Option<String>,
        size: Option<String>,
    ) -> HttpResponse {
        let wanted = match filter.as_deref().filter(|f| !f.is_empty()) {
            None => None,
            Some(f) => match f
                .strip_prefix("labels.")
                .and_then(|r| r.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            {
                Some(kv) => Some(kv),
                None => {
                    return self.refuse(
                        400,
                        "INVALID_ARGUMENT",
                        &format!("the stand-in reads only labels.KEY=\"VALUE\" filters, not {f:?}"),
                    );
                }
            },
        };
        let size: usize = match size.map(|s| s.parse::<i32>()) {
            None => 100,
            Some(Ok(n)) if n > 0 => n as usize,
            Some(_) => return self.refuse(400, "INVALID_ARGUMENT", "pageSize"),
        };
        let prefix = format!("projects/{project}/locations/{location}/jobs/");
        let jobs: Vec<Value> = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .map(|j| render(&j.lock().unwrap()))
            .filter(|j| j["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
            .filter(|j| match &wanted {
                Some((k, v)) => j["labels"][k].as_str() == Some(v),
                None => true,
            })
            .take(size)
            .collect();
        HttpResponse::Ok().json(json!({"jobs": jobs}))
    }

    fn delete(&self, id: &str) -> HttpResponse {
        let Some(job) = self.job(id) else {
            return error(404, "NOT_FOUND", &format!("Job not found: {id}"));
        };
        let mut j = job.lock().unwrap();
        if j.state != "DELETION_IN_PROGRESS" {
            j.delete = true;
            let from = j.state;
            j.state = "DELETION_IN_PROGRESS";
            j.updated = now();
            let name = j.name.clone();
            j.events.push(event(&format!(
                "Job state is set from {from} to DELETION_IN_PROGRESS for job {name}."
            )));
        }
        let name = j.name.clone();
        drop(j);
        HttpResponse::Ok().json(json!({
            "name": format!("{}/operations/operation-delete-{id}", name.split("/jobs/").next().unwrap_or("")),
            "done": false,
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.batch.v1.OperationMetadata",
                "createTime": now(), "target": name, "verb": "delete", "apiVersion": "v1",
            },
        }))
    }

    fn task(&self, id: &str, group: &str, n: &str) -> HttpResponse {
        let Some(job) = self.job(id) else {
            return error(404, "NOT_FOUND", &format!("Job not found: {id}"));
        };
        if group != "group0" || n != "0" {
            return error(404, "NOT_FOUND", &format!("Task not found: {group}/{n}"));
        }
        let j = job.lock().unwrap();
        HttpResponse::Ok().json(json!({
            "name": format!("{}/taskGroups/group0/tasks/0", j.name),
            "status": {"state": j.task_state, "statusEvents": j.task_events},
        }))
    }

    /// Cloud Logging `entries:list`: the request's fields as Logging v2 defines them, and the
    /// filter forms brizo writes (`logName="..."`, `labels.job_uid="..."`, `timestamp>="..."`
    /// joined by AND).
    fn entries(&self, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        let request = match self.json_body(req, body) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let Some(fields) = request.as_object() else {
            return self.refuse(400, "INVALID_ARGUMENT", "the request is not an object");
        };
        for key in fields.keys() {
            if ![
                "resourceNames",
                "projectIds",
                "filter",
                "orderBy",
                "pageSize",
                "pageToken",
            ]
            .contains(&key.as_str())
            {
                return self.refuse(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Invalid JSON payload received. Unknown name {key:?}"),
                );
            }
        }
        if !request["resourceNames"].as_array().is_some_and(|r| {
            !r.is_empty()
                && r.iter()
                    .all(|n| n.as_str().is_some_and(|n| n.starts_with("projects/")))
        }) {
            return self.refuse(
                400,
                "INVALID_ARGUMENT",
                "resourceNames: projects/P expected",
            );
        }
        let order = request["orderBy"].as_str().unwrap_or("timestamp asc");
        if order != "timestamp asc" && order != "timestamp desc" {
            return self.refuse(400, "INVALID_ARGUMENT", "orderBy");
        }
        let size = request["pageSize"].as_i64().unwrap_or(50).clamp(1, 1000) as usize;
        let start: usize = match request["pageToken"].as_str() {
            Some(t) => match t.parse() {
                Ok(n) => n,
                Err(_) => return self.refuse(400, "INVALID_ARGUMENT", "pageToken"),
            },
            None => 0,
        };
        let clauses = match filter_clauses(request["filter"].as_str().unwrap_or("")) {
            Ok(clauses) => clauses,
            Err(why) => return self.refuse(400, "INVALID_ARGUMENT", &why),
        };
        let entries = self.entries.lock().unwrap();
        let mut matching: Vec<&Value> = entries
            .iter()
            .filter(|e| clauses.iter().all(|c| c.holds_for(e)))
            .collect();
        if order == "timestamp desc" {
            matching.reverse();
        }
        let page: Vec<Value> = matching
            .iter()
            .skip(start)
            .take(size)
            .cloned()
            .cloned()
            .collect();
        let mut answer = json!({"entries": page});
        if start + size < matching.len() {
            answer["nextPageToken"] = Value::String((start + size).to_string());
        }
        HttpResponse::Ok().json(answer)
    }

    fn log(&self, job: &Job, line: &str, stderr: bool) {
        let n = self.sequence.fetch_add(1, Ordering::SeqCst);
        let project = job.name.split('/').nth(1).unwrap_or("");
        self.entries.lock().unwrap().push(json!({
            "logName": format!("projects/{project}/logs/batch_task_logs"),
            "resource": {"type": "batch.googleapis.com/Job",
                "labels": {"job": job.id, "job_uid": job.uid, "location": job.name.split('/').nth(3).unwrap_or("")}},
            "labels": {"job_uid": job.uid, "task_id": format!("task/{}-group0-0/0/0", job.uid),
                "task_group_name": format!("{}/taskGroups/group0", job.name)},
            "timestamp": now_nanos(),
            "receiveTimestamp": now_nanos(),
            "insertId": format!("{n:016x}"),
            "severity": if stderr { "ERROR" } else { "INFO" },
            "textPayload": line,
        }));
    }
}

/// One clause of a Cloud Logging filter, of the two kinds brizo writes: `key = "value"` and
/// `key >= "value"`.
struct Clause {
    key: String,
    at_least: bool,
    value: String,
}

impl Clause {
    fn holds_for(&self, entry: &Value) -> bool {
        let field = match self.key.as_str() {
            "logName" => entry["logName"].as_str(),
            "timestamp" => entry["timestamp"].as_str(),
            k => k
                .strip_prefix("labels.")
                .and_then(|l| entry["labels"][l].as_str()),
        };
        match field {
            Some(f) if self.at_least => f >= self.value.as_str(),
            Some(f) => f == self.value,
            None => false,
        }
    }
}

/// The clauses of a filter joined by `AND`; a clause of another kind is refused, saying so.
fn filter_clauses(filter: &str) -> Result<Vec<Clause>, String> {
    let mut clauses = vec![];
    for clause in filter.split(" AND ") {
        let clause = clause.trim();
        if clause.is_empty() {
            continue;
        }
        let (key, at_least, value) = match clause.split_once(">=") {
            Some((k, v)) => (k, true, v),
            None => match clause.split_once('=') {
                Some((k, v)) => (k, false, v),
                None => {
                    return Err(format!(
                        "the stand-in does not read the filter clause {clause:?}"
                    ));
                }
            },
        };
        clauses.push(Clause {
            key: key.trim().to_string(),
            at_least,
            value: value.trim().trim_matches('"').to_string(),
        });
    }
    Ok(clauses)
}

/// The job as Batch answers it: the body it was created with and the output-only fields.
fn render(j: &Job) -> Value {
    let mut v = j.body.clone();
    v["name"] = json!(j.name);
    v["uid"] = json!(j.uid);
    v["createTime"] = json!(j.created);
    v["updateTime"] = json!(j.updated);
    if let Some(groups) = v["taskGroups"].as_array_mut() {
        for group in groups {
            group["name"] = json!(format!("{}/taskGroups/group0", j.name));
        }
    }
    v["status"] = json!({
        "state": j.state,
        "statusEvents": j.events,
        "taskGroups": {"group0": {"counts": {j.task_state: "1"}}},
    });
    v
}

fn event(description: &str) -> Value {
    json!({"type": "STATUS_CHANGED", "eventTime": now_nanos(), "description": description})
}

fn task_event(from: &str, to: &'static str, exit: Option<i64>) -> Value {
    let mut e = json!({
        "type": "STATUS_CHANGED",
        "eventTime": now_nanos(),
        "taskState": to,
        "description": format!("Task state is updated from {from} to {to} on zones/standin-a/instances/standin-0"),
    });
    if let Some(code) = exit {
        e["taskExecution"] = json!({"exitCode": code});
        e["description"] = json!(format!(
            "Task state is updated from {from} to {to} on zones/standin-a/instances/standin-0 with exit code {code}."
        ));
    }
    e
}

fn set_state(j: &mut Job, to: &'static str) {
    if j.state == "DELETION_IN_PROGRESS" {
        return;
    }
    let (from, name) = (j.state, j.name.clone());
    j.state = to;
    j.updated = now();
    j.events.push(event(&format!(
        "Job state is set from {from} to {to} for job {name}."
    )));
}

fn set_task(j: &mut Job, to: &'static str, exit: Option<i64>) {
    let from = j.task_state;
    j.task_state = to;
    j.task_events.push(task_event(from, to, exit));
}

/// Runs the job as a Batch VM would: `docker run` with the container runnable's options,
/// volumes, entrypoint, environment, image and commands; stdout and stderr into Cloud Logging.
fn run(state: Arc<State>, job: Arc<Mutex<Job>>, max_run: Option<Duration>) {
    // Scheduling: a moment in QUEUED and SCHEDULED, as a VM is found.
    std::thread::sleep(Duration::from_millis(200));
    {
        let mut j = job.lock().unwrap();
        if j.delete {
            drop(j);
            return end_deleted(&state, &job);
        }
        set_state(&mut j, "SCHEDULED");
        set_task(&mut j, "ASSIGNED", None);
    }
    let (body, id, uid) = {
        let j = job.lock().unwrap();
        (j.body.clone(), j.id.clone(), j.uid.clone())
    };
    let name = format!("gcp-standin-{}-{id}", state.label);
    let Some(mut command) = docker_run(&body, &state.label, &id, &uid, &name) else {
        let mut j = job.lock().unwrap();
        set_task(&mut j, "FAILED", None);
        set_state(&mut j, "FAILED");
        return;
    };
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let mut j = job.lock().unwrap();
            j.events.push(event(&format!(
                "the container runtime is not available: {e}"
            )));
            set_task(&mut j, "FAILED", None);
            set_state(&mut j, "FAILED");
            return;
        }
    };
    // Docker prints its own refusals (no such image) on stderr before the container starts:
    // they are kept apart, not logged as the task's.
    let early = Arc::new(Mutex::new(String::new()));
    let readers = log_lines(&mut child, &state, &job, &early);
    let (status, timed_out) = watch(child, &job, &name, max_run);
    for reader in readers {
        let _ = reader.join();
    }
    crate::docker_quietly(&["rm", "-f", &name]);
    let code = status.code().map(i64::from).unwrap_or(137);
    let early = early.lock().unwrap().clone();
    settle(&state, &job, code, timed_out, &early);
}

/// A deleted job stays listed a moment (`linger`), then goes.
fn end_deleted(state: &State, job: &Arc<Mutex<Job>>) {
    std::thread::sleep(state.linger);
    let id = job.lock().unwrap().id.clone();
    state.jobs.lock().unwrap().remove(&id);
}

/// The `docker run` a Batch VM would make of the job's one runnable; `None` when its options
/// cannot be split into words.
fn docker_run(body: &Value, label: &str, id: &str, uid: &str, name: &str) -> Option<Command> {
    let spec = &body["taskGroups"][0]["taskSpec"];
    let runnable = &spec["runnables"][0];
    let container = &runnable["container"];
    let mut command = Command::new("docker");
    command.args([
        "run",
        "--name",
        name,
        "--label",
        &format!("brizo.gcp-standin={label}"),
        "--label",
        &format!("brizo.gcp-job={id}"),
        "--network",
        "host",
        "-e",
        &format!("BATCH_JOB_UID={uid}"),
        "-e",
        "BATCH_TASK_INDEX=0",
        "-e",
        "BATCH_TASK_COUNT=1",
    ]);
    for scope in [&spec["environment"], &runnable["environment"]] {
        for (k, v) in scope["variables"].as_object().into_iter().flatten() {
            command.args(["-e", &format!("{k}={}", v.as_str().unwrap_or_default())]);
        }
    }
    for volume in container["volumes"].as_array().into_iter().flatten() {
        command.args(["-v", volume.as_str().unwrap_or_default()]);
    }
    if let Some(entrypoint) = container["entrypoint"].as_str() {
        command.args(["--entrypoint", entrypoint]);
    }
    command.args(shell_words::split(container["options"].as_str().unwrap_or("")).ok()?);
    command.arg(container["imageUri"].as_str().unwrap_or_default());
    for c in container["commands"].as_array().into_iter().flatten() {
        command.arg(c.as_str().unwrap_or_default());
    }
    Some(command)
}

/// Threads that send the container's stdout and stderr lines to Cloud Logging; stderr from
/// before the task runs (Docker's own refusals) also goes to `early`.
fn log_lines(
    child: &mut Child,
    state: &Arc<State>,
    job: &Arc<Mutex<Job>>,
    early: &Arc<Mutex<String>>,
) -> Vec<std::thread::JoinHandle<()>> {
    [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .enumerate()
    .filter_map(|(n, s)| s.map(|s| (n == 1, s)))
    .map(|(stderr, stream)| {
        let (state, job, early) = (state.clone(), job.clone(), early.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let j = job.lock().unwrap();
                if j.task_state != "RUNNING" && stderr {
                    early.lock().unwrap().push_str(&line);
                    early.lock().unwrap().push('\n');
                }
                state.log(&j, &line, stderr);
            }
        })
    })
    .collect()
}

/// Waits for the container to end: RUNNING once Docker says it runs; killed when the job is
/// deleted or outlives its `maxRunDuration`. Its exit status, and whether the limit ended it.
fn watch(
    mut child: Child,
    job: &Mutex<Job>,
    name: &str,
    max_run: Option<Duration>,
) -> (ExitStatus, bool) {
    let started = Instant::now();
    let mut running = false;
    let mut timed_out = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (status, timed_out);
        }
        if !running
            && Command::new("docker")
                .args(["inspect", "-f", "{{.State.Running}}", name])
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        {
            running = true;
            let mut j = job.lock().unwrap();
            set_state(&mut j, "RUNNING");
            if j.state == "RUNNING" {
                set_task(&mut j, "RUNNING", None);
            }
        }
        let delete = job.lock().unwrap().delete;
        let over = running && max_run.is_some_and(|m| started.elapsed() > m);
        if delete || over {
            timed_out |= over && !delete;
            crate::docker_quietly(&["kill", name]);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The job's and task's end states (and events) as Batch reports them for how it ended.
fn settle(state: &State, job: &Arc<Mutex<Job>>, code: i64, timed_out: bool, early: &str) {
    let mut j = job.lock().unwrap();
    let was_running = j.task_state == "RUNNING";
    if code == 125 && !was_running && !j.delete {
        // Docker could not create or start the container (no such image, bad options): the
        // task fails without having run.
        let why = early.trim().chars().take(500).collect::<String>();
        j.events.push(event(&format!(
            "Task failed before it ran: the container could not be started: {why}"
        )));
        set_task(&mut j, "FAILED", None);
        set_state(&mut j, "FAILED");
    } else if j.delete {
        if was_running {
            set_task(&mut j, "FAILED", Some(code));
        }
        drop(j);
        end_deleted(state, job);
    } else if timed_out {
        set_task(&mut j, "FAILED", Some(EXIT_MAX_RUN_DURATION));
        j.events.push(event(&format!(
            "Task state is updated from RUNNING to FAILED with exit code {EXIT_MAX_RUN_DURATION}: the task exceeded its maxRunDuration."
        )));
        set_state(&mut j, "FAILED");
    } else if code != 0 {
        set_task(&mut j, "FAILED", Some(code));
        set_state(&mut j, "FAILED");
    } else {
        set_task(&mut j, "SUCCEEDED", Some(0));
        set_state(&mut j, "SUCCEEDED");
    }
}

/// What the stand-in runs of a valid job, as Batch would refuse otherwise: one task group of one
/// container runnable with an image, a readable `maxRunDuration` (returned), valid labels.
fn what_the_standin_runs(job: &Value) -> Result<Option<Duration>, String> {
    let groups = job["taskGroups"].as_array().map(Vec::len).unwrap_or(0);
    if groups != 1 {
        return Err("Only one TaskGroup is supported now (taskGroups is required).".into());
    }
    let spec = &job["taskGroups"][0]["taskSpec"];
    let runnables = spec["runnables"].as_array().cloned().unwrap_or_default();
    if runnables.is_empty() {
        return Err("taskSpec.runnables is required.".into());
    }
    if runnables.len() != 1 || runnables[0].get("container").is_none() {
        return Err("the stand-in runs one container runnable per task".into());
    }
    if runnables[0]["container"]["imageUri"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err("container.imageUri is required.".into());
    }
    let max_run = match spec["maxRunDuration"].as_str() {
        Some(d) => match parse_duration(d) {
            Some(d) => Some(d),
            None => return Err("maxRunDuration".into()),
        },
        None => None,
    };
    for (key, value) in job["labels"].as_object().into_iter().flatten() {
        if let Err(why) = check_label(key, value.as_str().unwrap_or("")) {
            return Err(format!("labels: {why}"));
        }
    }
    Ok(max_run)
}

/// Batch job ids: at most 63 of lowercase letters, digits and `-`, starting with a letter,
/// not ending with `-`.
fn check_job_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(()).ok_or_else(|| {
        format!("{id:?} is not 1-63 lowercase letters, digits and '-', starting with a letter")
    })
}

/// Compute Engine labels: keys start with a lowercase letter; keys and values are at most 63
/// of lowercase letters, digits, `-` and `_`; no `goog`-reserved keys.
fn check_label(key: &str, value: &str) -> Result<(), String> {
    let chars = |s: &str| {
        s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    if !key.starts_with(|c: char| c.is_ascii_lowercase()) || !chars(key) || !chars(value) {
        return Err(format!("{key:?}={value:?} is not a Compute Engine label"));
    }
    if key.starts_with("goog") {
        return Err(format!("{key:?} is reserved"));
    }
    Ok(())
}

/// A google-duration: decimal seconds and `s` (`"3600s"`, `"1.5s"`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let n = s.strip_suffix('s')?;
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    n.parse::<f64>().ok().map(Duration::from_secs_f64)
}

/// A discovery document's schemas: references by bare name, 64-bit integers as decimal
/// strings and durations as seconds (`"90s"`).
const DISCOVERY_SCHEMAS: Dialect = Dialect {
    ref_prefix: "",
    string_format: |format, s| match format {
        "int64" if s.parse::<i64>().is_err() => {
            Some(format!("{s:?} is not an int64 (a decimal string)"))
        }
        "google-duration" if parse_duration(s).is_none() => {
            Some(format!("{s:?} is not a google-duration (\"90s\")"))
        }
        _ => None,
    },
};

/// Checks `value` against the discovery document's schema `name`, one line per violation.
pub fn validate(schemas: &Value, name: &str, value: &Value, at: &str) -> Vec<String> {
    schema::check(&DISCOVERY_SCHEMAS, schemas, name, value, at)
}

/// Now, as RFC 3339 UTC with nanoseconds (the fixed width keeps them in order as strings).
fn now_nanos() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn now() -> String {
    now_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_durations_are_read() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("90"), None);
        assert_eq!(parse_duration("PT90S"), None);
    }

    #[test]
    fn the_checker_refuses_what_the_discovery_document_does_not_define() {
        let doc: Value = serde_json::from_str(DISCOVERY).unwrap();
        let check = |v: Value| validate(&doc["schemas"], "Job", &v, "job");
        let good = json!({"taskGroups": [{"taskCount": "1", "taskSpec": {
            "runnables": [{"container": {"imageUri": "debian", "commands": ["true"]}}],
            "computeResource": {"cpuMilli": "1000", "memoryMib": "512"},
            "maxRunDuration": "60s", "maxRetryCount": 0}}],
            "allocationPolicy": {"network": {"networkInterfaces": [{"noExternalIpAddress": true}]}},
            "labels": {"a": "b"}, "logsPolicy": {"destination": "CLOUD_LOGGING"}});
        assert_eq!(check(good.clone()), Vec::<String>::new());
        let mut unknown = good.clone();
        unknown["taskGroups"][0]["taskSpec"]["runnables"][0]["container"]["image"] = json!("x");
        assert!(check(unknown)[0].contains("no such property"));
        let mut number = good.clone();
        number["taskGroups"][0]["taskSpec"]["computeResource"]["cpuMilli"] = json!(1000);
        assert!(check(number)[0].contains("expected a string"));
        let mut duration = good.clone();
        duration["taskGroups"][0]["taskSpec"]["maxRunDuration"] = json!("PT60S");
        assert!(check(duration)[0].contains("google-duration"));
        let mut enumerated = good.clone();
        enumerated["logsPolicy"]["destination"] = json!("STDOUT");
        assert!(check(enumerated)[0].contains("is not one of"));
        let mut output = good;
        output["status"] = json!({"state": "RUNNING"});
        assert!(check(output)[0].contains("output only"));
    }

    #[test]
    fn job_ids_and_labels_are_checked() {
        assert!(check_job_id("brizo-0a1b").is_ok());
        assert!(check_job_id("Brizo").is_err());
        assert!(check_job_id("1abc").is_err());
        assert!(check_job_id("abc-").is_err());
        assert!(check_job_id(&"a".repeat(64)).is_err());
        assert!(check_label("brizo_job", "x_1").is_ok());
        assert!(check_label("brizo_job", "X").is_err());
        assert!(check_label("goog-x", "a").is_err());
    }
}
