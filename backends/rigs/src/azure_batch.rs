//! A STAND-IN for the Azure Batch service, for tests, the benchmark and `make try-azure`: Azure
//! Batch has no emulator. It is test code, not Azure: it speaks the data-plane REST API as the
//! official specification defines it (API version [`API_VERSION`]) for the operations brizo
//! uses (Pool_Get, Job_Add, Job_Get, Task_Add, Task_Get, Task_Terminate, Task_Delete, File_GetFromTask,
//! File_GetPropertiesFromTask), and runs each task's command line as a container on the local
//! Docker engine, the way moto does for AWS Batch.
//!
//! What it checks of every request, so that the client is right against Azure and not only
//! against this server: the `api-version`, a credential of one of the specification's
//! `securityDefinitions` (a Microsoft Entra bearer token this process's stand-in tenant issued
//! for Batch's audience and that has not expired, [`crate::entra`], else 401
//! AuthenticationFailed as Batch answers; or a valid Shared Key signature, else 403), and each request body
//! (and its own CloudTask answers) against the specification's schemas (`fixtures/azure-batch/`, a copy of the relevant
//! definitions of `BatchService.json` with its source and commit): required properties, types,
//! formats (durations), enums, and no property the specification does not define. A request
//! that fails is refused with 400, as Batch would, and kept in [`BatchStandin::violations`].
//!
//! It also serves the managed identity endpoint of App Service at [`entra::IDENTITY_PATH`]
//! ([`BatchStandin::identity_endpoint`]), from which azure_identity's `ManagedIdentityCredential`
//! gets the tokens it accepts. It does not check roles: a known token may do everything.
//!
//! What it does not do: pools and nodes (one pool, every task starts at once on this host),
//! retries, job termination, certificates, Batch's own folders in the container. Containers run
//! with host networking (as Batch's do), so a task reaches Azurite on 127.0.0.1.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use hmac::Mac;
use serde_json::{Value, json};

use crate::entra;
use crate::schema::{self, Dialect};

/// The API version the stand-in (and the specification excerpt) is of.
pub const API_VERSION: &str = "2024-07-01.20.0";
pub const ACCOUNT: &str = "brizostandin";
/// The account key the stand-in checks signatures with (base64, as Azure shows keys).
pub const KEY: &str = "YnJpem8tc3RhbmQtaW4tYmF0Y2gta2V5LW5vdC1hLXNlY3JldA==";
pub const POOL: &str = "brizo-pool";
/// The specification excerpt the request bodies are checked against.
pub const SPEC: &str =
    include_str!("../fixtures/azure-batch/BatchService-2024-07-01.20.0.excerpt.json");

pub struct BatchStandin {
    /// `http://127.0.0.1:PORT`, the Batch account URL.
    pub url: String,
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
    watcher: std::process::Child,
}

struct State {
    key: Vec<u8>,
    definitions: Value,
    /// Task folders: `<job>/<task>/stdout.txt`, `stderr.txt`.
    dir: PathBuf,
    /// Labels the containers of this stand-in.
    label: String,
    jobs: Mutex<HashMap<String, Job>>,
    operations: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
    /// The id of every Task_Add body that passed the checks, accepted or not.
    task_adds: Mutex<Vec<String>>,
    /// Requests still to answer with 429 TooManyRequests, as a throttled account does.
    throttle: std::sync::atomic::AtomicUsize,
    /// The lifetime of the tokens the managed identity endpoint issues.
    token_lifetime: Mutex<Duration>,
    /// Refuses every bearer token as expired (a clock gone wrong, a revoked sign-in).
    tokens_expired: std::sync::atomic::AtomicBool,
    /// Each request's credential: `SharedKey` or `Bearer <token>`, in order.
    credentials: Mutex<Vec<String>>,
}

struct Job {
    id: String,
    pool_id: String,
    created: String,
    tasks: HashMap<String, Arc<Mutex<Task>>>,
}

struct Task {
    body: Value,
    created: String,
    state: &'static str,
    state_time: String,
    start: Option<String>,
    end: Option<String>,
    exit_code: Option<i64>,
    failure: Option<Value>,
    terminate: bool,
    dir: PathBuf,
}

impl BatchStandin {
    /// Starts the server on a free port of 127.0.0.1 with the one pool [`POOL`] and no jobs.
    /// Its containers are removed when it is dropped, and by a watcher if this process dies.
    pub fn start() -> Result<BatchStandin, String> {
        Self::start_on(0)
    }

    pub fn start_on(port: u16) -> Result<BatchStandin, String> {
        let spec: Value =
            serde_json::from_str(SPEC).map_err(|e| format!("the spec excerpt: {e}"))?;
        let label = format!("{}-{}", std::process::id(), crate::free_port());
        let dir = std::env::temp_dir().join(format!("brizo-batch-standin-{label}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let state = Arc::new(State {
            key: base64::engine::general_purpose::STANDARD
                .decode(KEY)
                .expect("the key is base64"),
            definitions: spec["definitions"].clone(),
            dir,
            label: label.clone(),
            jobs: Mutex::new(HashMap::new()),
            operations: Mutex::new(vec![]),
            violations: Mutex::new(vec![]),
            task_adds: Mutex::new(vec![]),
            throttle: std::sync::atomic::AtomicUsize::new(0),
            token_lifetime: Mutex::new(Duration::from_secs(3600)),
            tokens_expired: std::sync::atomic::AtomicBool::new(false),
            credentials: Mutex::new(vec![]),
        });
        for scheme in ["azure_auth", "api_key"] {
            if spec["securityDefinitions"][scheme].is_null() {
                return Err(format!("the spec excerpt defines no {scheme} security"));
            }
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("binding the stand-in: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = crate::serve(listener, state.clone(), handle, 4 << 20)?;
        let watcher = crate::reap_containers_after_exit(&format!("brizo.batch-standin={label}"))?;
        Ok(BatchStandin {
            url: format!("http://{addr}"),
            state,
            server,
            watcher,
        })
    }

    /// Adds a Batch job on [`POOL`] directly (for scripts; clients use Job_Add).
    pub fn add_job(&self, id: &str) {
        self.state
            .jobs
            .lock()
            .unwrap()
            .entry(id.to_lowercase())
            .or_insert_with(|| Job {
                id: id.to_string(),
                pool_id: POOL.to_string(),
                created: now(),
                tasks: HashMap::new(),
            });
    }

    /// Requests refused for not being what the specification defines, in words.
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Every request as `METHOD /path`, in order.
    pub fn operations(&self) -> Vec<String> {
        self.state.operations.lock().unwrap().clone()
    }

    /// Answers the next `n` requests with 429 TooManyRequests (after checking them).
    pub fn throttle(&self, n: usize) {
        self.state.throttle.store(n, Ordering::SeqCst);
    }

    /// The URL of the managed identity endpoint, for `IDENTITY_ENDPOINT` (with
    /// [`entra::IDENTITY_HEADER`] in `IDENTITY_HEADER`).
    pub fn identity_endpoint(&self) -> String {
        format!("{}{}", self.url, entra::IDENTITY_PATH)
    }

    /// The lifetime of the tokens the managed identity endpoint issues from now on (1 hour
    /// until this is called).
    pub fn issue_tokens_for(&self, lifetime: Duration) {
        *self.state.token_lifetime.lock().unwrap() = lifetime;
    }

    /// Refuses every bearer token from now on, as Batch refuses an expired one.
    pub fn refuse_tokens_as_expired(&self) {
        self.state.tokens_expired.store(true, Ordering::SeqCst);
    }

    /// Each request's credential, in order: `SharedKey`, or `Bearer <token>`.
    pub fn credentials(&self) -> Vec<String> {
        self.state.credentials.lock().unwrap().clone()
    }

    /// How many times a task of this id was asked for (Task_Add), accepted or not.
    pub fn task_adds(&self, task_id: &str) -> usize {
        self.state
            .task_adds
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.eq_ignore_ascii_case(task_id))
            .count()
    }

    /// The body a task was added with, as the client sent it.
    pub fn task_body(&self, job_id: &str, task_id: &str) -> Option<Value> {
        let jobs = self.state.jobs.lock().unwrap();
        let task = jobs
            .get(&job_id.to_lowercase())?
            .tasks
            .get(&task_id.to_lowercase())?
            .clone();
        let body = task.lock().unwrap().body.clone();
        Some(body)
    }

    /// Checks `body` against the specification's `definition` (for tests of the checker).
    pub fn check(&self, definition: &str, body: &Value) -> Vec<String> {
        validate(&self.state.definitions, definition, body, definition)
    }
}

impl Drop for BatchStandin {
    fn drop(&mut self) {
        for job in self.state.jobs.lock().unwrap().values() {
            for task in job.tasks.values() {
                task.lock().unwrap().terminate = true;
            }
        }
        drop(self.server.stop(false));
        crate::remove_containers(&format!("brizo.batch-standin={}", self.state.label));
        let _ = self.watcher.kill();
        let _ = self.watcher.wait();
        let _ = std::fs::remove_dir_all(&self.state.dir);
    }
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("request-id", "00000000-0000-0000-0000-000000000000"))
        .json(json!({
            "odata.metadata": "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
            "code": code,
            "message": {"lang": "en-US", "value": message},
        }))
}

/// Batch's answer to a request whose credential it does not take: 401 AuthenticationFailed,
/// why in `AuthenticationErrorDetail`, and the bearer challenge.
fn unauthenticated(why: &str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header(("request-id", "00000000-0000-0000-0000-000000000000"))
        .insert_header((
            "WWW-Authenticate",
            format!(
                "Bearer authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"invalid_token\", error_description=\"{why}\""
            ),
        ))
        .json(json!({
            "odata.metadata": "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
            "code": "AuthenticationFailed",
            "message": {"lang": "en-US", "value": "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly."},
            "values": [{"key": "AuthenticationErrorDetail", "value": why}],
        }))
}

async fn handle(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<State>>) -> HttpResponse {
    let state = state.get_ref().clone();
    if req.path() == entra::IDENTITY_PATH {
        let header = req
            .headers()
            .get("x-identity-header")
            .and_then(|v| v.to_str().ok());
        let lifetime = *state.token_lifetime.lock().unwrap();
        return entra::managed_identity(&query_of(&req), header, lifetime);
    }
    state
        .operations
        .lock()
        .unwrap()
        .push(format!("{} {}", req.method(), req.path()));
    let query = query_of(&req);
    if !query
        .iter()
        .any(|(k, v)| k == "api-version" && v == API_VERSION)
    {
        return state.refuse(
            400,
            "InvalidQueryParameterValue",
            &format!(
                "{} {}: api-version must be {API_VERSION}",
                req.method(),
                req.path()
            ),
        );
    }
    if let Some(refused) = state.credential_refusal(&req, &query) {
        return refused;
    }
    if state.take_throttle() {
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "1"))
            .json(json!({"code": "TooManyRequests",
                "message": {"lang": "en-US", "value": "The account is throttled."}}));
    }
    route(&state, &req, &body)
}

/// The operation a request names, by method and path.
fn route(state: &Arc<State>, req: &HttpRequest, body: &web::Bytes) -> HttpResponse {
    let parts: Vec<String> = req
        .path()
        .trim_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let method = req.method().as_str();
    match (method, parts.as_slice()) {
        ("GET", ["pools", pool]) => state.get_pool(pool),
        ("POST", ["jobs"]) => state.add_job(req, body),
        ("GET", ["jobs", job]) => state.get_job(job),
        ("POST", ["jobs", job, "tasks"]) => state.add_task(req, job, body),
        ("GET", ["jobs", job, "tasks", task]) => state.get_task(job, task),
        ("POST", ["jobs", job, "tasks", task, "terminate"]) => state.terminate(job, task),
        ("DELETE", ["jobs", job, "tasks", task]) => state.delete_task(job, task),
        ("GET" | "HEAD", ["jobs", job, "tasks", task, "files", file]) => {
            state.file(req, method == "HEAD", job, task, file)
        }
        _ => error(
            404,
            "InvalidUri",
            &format!("the stand-in does not serve {method} {}", req.path()),
        ),
    }
}

/// The query parameters, decoded.
fn query_of(req: &HttpRequest) -> Vec<(String, String)> {
    req.query_string()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

impl State {
    /// Checks the request's credential as Batch does: a Microsoft Entra token for the Batch
    /// resource, or a Shared Key signature; the refusal Batch would answer, if any.
    fn credential_refusal(
        &self,
        req: &HttpRequest,
        query: &[(String, String)],
    ) -> Option<HttpResponse> {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if let Some(token) = auth.strip_prefix("Bearer ") {
            self.credentials
                .lock()
                .unwrap()
                .push(format!("Bearer {token}"));
            let checked = if self.tokens_expired.load(Ordering::SeqCst) {
                Err(
                    "The access token expiry UTC time is earlier than current UTC time."
                        .to_string(),
                )
            } else {
                entra::check(token, entra::BATCH_RESOURCE)
            };
            if let Err(why) = checked {
                self.violations.lock().unwrap().push(format!(
                    "AuthenticationFailed: {} {}: {why}",
                    req.method(),
                    req.path()
                ));
                return Some(unauthenticated(&why));
            }
        } else if auth.starts_with("SharedKey ") {
            self.credentials.lock().unwrap().push("SharedKey".into());
            if let Err(why) = self.authenticate(req, query) {
                return Some(self.refuse(403, "AuthenticationFailed", &why));
            }
        } else {
            self.violations.lock().unwrap().push(format!(
                "AuthenticationFailed: {} {}: no credential",
                req.method(),
                req.path()
            ));
            return Some(unauthenticated(
                "The request has no Bearer token and no Shared Key signature.",
            ));
        }
        None
    }

    /// Whether this request is one of the throttled ones a test asked for (and counts it).
    fn take_throttle(&self) -> bool {
        self.throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn refuse(&self, status: u16, code: &str, message: &str) -> HttpResponse {
        if status == 400 || status == 403 {
            self.violations
                .lock()
                .unwrap()
                .push(format!("{code}: {message}"));
        }
        error(status, code, message)
    }

    /// Batch Shared Key: `SharedKey <account>:<base64 HMAC-SHA256>` over the verb, eleven
    /// standard headers, the `ocp-*` headers and the resource, computed here from the request
    /// as received.
    fn authenticate(&self, req: &HttpRequest, query: &[(String, String)]) -> Result<(), String> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let auth = header("authorization");
        let Some((account, signature)) = auth
            .strip_prefix("SharedKey ")
            .and_then(|s| s.split_once(':'))
        else {
            return Err(format!("no Shared Key authorization (got {auth:?})"));
        };
        if account != ACCOUNT {
            return Err(format!("account {account:?} is not {ACCOUNT:?}"));
        }
        if header("ocp-date").is_empty() && header("date").is_empty() {
            return Err("the request has no ocp-date".into());
        }
        let standard = [
            "content-encoding",
            "content-language",
            "content-length",
            "content-md5",
            "content-type",
            "date",
            "if-modified-since",
            "if-match",
            "if-none-match",
            "if-unmodified-since",
            "range",
        ];
        let mut to_sign = format!("{}\n", req.method());
        for h in standard {
            to_sign.push_str(&header(h));
            to_sign.push('\n');
        }
        let mut ocp: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("ocp-"))
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        ocp.sort();
        for (k, v) in ocp {
            to_sign.push_str(&format!("{k}:{v}\n"));
        }
        to_sign.push_str(&format!("/{ACCOUNT}{}", req.path()));
        let mut query: Vec<&(String, String)> =
            query.iter().filter(|(_, v)| !v.is_empty()).collect();
        query.sort();
        for (k, v) in query {
            to_sign.push_str(&format!("\n{k}:{v}"));
        }
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).unwrap();
        mac.update(to_sign.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        if expected != signature {
            return Err(format!(
                "the signature does not match; the string to sign was {to_sign:?}"
            ));
        }
        Ok(())
    }

    /// The request body as JSON of `definition`, or the refusal to answer.
    fn body(
        &self,
        req: &HttpRequest,
        body: &[u8],
        definition: &str,
    ) -> Result<Value, Box<HttpResponse>> {
        let kind = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !kind.starts_with("application/json") {
            return Err(Box::new(self.refuse(
                400,
                "InvalidHeaderValue",
                &format!("Content-Type {kind:?} is not application/json"),
            )));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            Box::new(self.refuse(400, "InvalidRequestBody", &format!("not JSON: {e}")))
        })?;
        let errors = validate(&self.definitions, definition, &value, definition);
        if !errors.is_empty() {
            return Err(Box::new(self.refuse(
                400,
                "InvalidRequestBody",
                &format!("not a valid {definition}: {}", errors.join("; ")),
            )));
        }
        Ok(value)
    }

    fn add_job(&self, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        let job = match self.body(req, body, "JobAddParameter") {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let id = job["id"].as_str().unwrap_or_default().to_string();
        if let Err(why) = check_id(&id) {
            return self.refuse(400, "InvalidPropertyValue", &format!("job id: {why}"));
        }
        let Some(pool) = job["poolInfo"]["poolId"].as_str() else {
            return self.refuse(
                400,
                "InvalidPropertyValue",
                "the stand-in runs jobs on an existing pool only (poolInfo.poolId)",
            );
        };
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.contains_key(&id.to_lowercase()) {
            return error(409, "JobExists", "The specified job already exists.");
        }
        jobs.insert(
            id.to_lowercase(),
            Job {
                id: id.clone(),
                pool_id: pool.to_string(),
                created: now(),
                tasks: HashMap::new(),
            },
        );
        HttpResponse::Created()
            .insert_header(("ETag", "0x1"))
            .insert_header(("Last-Modified", httpdate::fmt_http_date(SystemTime::now())))
            .insert_header(("DataServiceId", format!("/jobs/{id}")))
            .insert_header(("Location", format!("/jobs/{id}")))
            .finish()
    }

    /// The one pool: container-enabled, one dedicated node (this host), steady.
    fn get_pool(&self, id: &str) -> HttpResponse {
        if !id.eq_ignore_ascii_case(POOL) {
            return error(404, "PoolNotFound", "The specified pool does not exist.");
        }
        HttpResponse::Ok().json(json!({
            "odata.metadata": "$metadata#pools/@Element",
            "id": POOL, "url": format!("/pools/{POOL}"), "eTag": "0x1",
            "state": "active", "allocationState": "steady",
            "vmSize": "standard_d2s_v5", "taskSlotsPerNode": 1,
            "currentDedicatedNodes": 1, "currentLowPriorityNodes": 0,
            "targetDedicatedNodes": 1, "targetLowPriorityNodes": 0,
            "enableAutoScale": false, "enableInterNodeCommunication": false,
            "targetNodeCommunicationMode": "simplified",
            "virtualMachineConfiguration": {
                "imageReference": {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204", "version": "latest"},
                "nodeAgentSKUId": "batch.node.ubuntu 22.04",
                "containerConfiguration": {"type": "dockerCompatible"}
            },
            "networkConfiguration": {"publicIPAddressConfiguration": {"provision": "nopublicipaddresses"}},
        }))
    }

    fn get_job(&self, id: &str) -> HttpResponse {
        let jobs = self.jobs.lock().unwrap();
        let Some(job) = jobs.get(&id.to_lowercase()) else {
            return error(404, "JobNotFound", "The specified job does not exist.");
        };
        HttpResponse::Ok().json(json!({
            "odata.metadata": "$metadata#jobs/@Element",
            "id": job.id, "url": format!("/jobs/{}", job.id), "eTag": "0x1",
            "lastModified": job.created, "creationTime": job.created,
            "state": "active", "stateTransitionTime": job.created,
            "priority": 0, "maxParallelTasks": -1, "allowTaskPreemption": false,
            "usesTaskDependencies": false,
            "constraints": {"maxWallClockTime": "P10675199DT2H48M5.4775807S", "maxTaskRetryCount": 0},
            "poolInfo": {"poolId": job.pool_id},
            "executionInfo": {"startTime": job.created, "poolId": job.pool_id},
            "onAllTasksComplete": "noaction", "onTaskFailure": "noaction",
        }))
    }

    fn add_task(self: &Arc<Self>, req: &HttpRequest, job_id: &str, body: &[u8]) -> HttpResponse {
        let task = match self.body(req, body, "TaskAddParameter") {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let id = task["id"].as_str().unwrap_or_default().to_string();
        self.task_adds.lock().unwrap().push(id.clone());
        if let Err(why) = check_id(&id) {
            return self.refuse(400, "InvalidPropertyValue", &format!("task id: {why}"));
        }
        // The pool is container-enabled: Batch refuses a task without container settings.
        if task.get("containerSettings").is_none() {
            return self.refuse(
                400,
                "InvalidPropertyValue",
                "the pool has a containerConfiguration: the task needs containerSettings",
            );
        }
        let max_wall = match task["constraints"]["maxWallClockTime"].as_str() {
            Some(d) => match parse_duration(d) {
                Some(d) => Some(d),
                None => return self.refuse(400, "InvalidPropertyValue", "maxWallClockTime"),
            },
            None => None,
        };
        let mut jobs = self.jobs.lock().unwrap();
        let Some(job) = jobs.get_mut(&job_id.to_lowercase()) else {
            return error(404, "JobNotFound", "The specified job does not exist.");
        };
        if job.tasks.contains_key(&id.to_lowercase()) {
            return error(409, "TaskExists", "The specified task already exists.");
        }
        let dir = self.dir.join(job_id.to_lowercase()).join(id.to_lowercase());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return error(500, "InternalError", &e.to_string());
        }
        let created = now();
        let record = Arc::new(Mutex::new(Task {
            body: task.clone(),
            created: created.clone(),
            state: "active",
            state_time: created,
            start: None,
            end: None,
            exit_code: None,
            failure: None,
            terminate: false,
            dir,
        }));
        job.tasks.insert(id.to_lowercase(), record.clone());
        let label = self.label.clone();
        let job_name = job.id.clone();
        std::thread::spawn(move || run_task(record, &label, &job_name, max_wall));
        HttpResponse::Created()
            .insert_header(("ETag", "0x1"))
            .insert_header(("Last-Modified", httpdate::fmt_http_date(SystemTime::now())))
            .insert_header(("DataServiceId", format!("/jobs/{job_id}/tasks/{id}")))
            .insert_header(("Location", format!("/jobs/{job_id}/tasks/{id}")))
            .finish()
    }

    fn task(&self, job_id: &str, task_id: &str) -> Result<Arc<Mutex<Task>>, Box<HttpResponse>> {
        let jobs = self.jobs.lock().unwrap();
        let Some(job) = jobs.get(&job_id.to_lowercase()) else {
            return Err(Box::new(error(
                404,
                "JobNotFound",
                "The specified job does not exist.",
            )));
        };
        job.tasks
            .get(&task_id.to_lowercase())
            .cloned()
            .ok_or_else(|| {
                Box::new(error(
                    404,
                    "TaskNotFound",
                    "The specified task does not exist.",
                ))
            })
    }

    fn get_task(&self, job_id: &str, task_id: &str) -> HttpResponse {
        let task = match self.task(job_id, task_id) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        let t = task.lock().unwrap();
        let mut out = t.body.clone();
        let mut execution = json!({"retryCount": 0, "requeueCount": 0});
        if let Some(start) = &t.start {
            execution["startTime"] = json!(start);
        }
        if let Some(end) = &t.end {
            execution["endTime"] = json!(end);
        }
        if let Some(code) = t.exit_code {
            execution["exitCode"] = json!(code);
        }
        if let Some(failure) = &t.failure {
            execution["failureInfo"] = failure.clone();
        }
        if t.state == "completed" {
            let ok = t.exit_code == Some(0) && t.failure.is_none();
            execution["result"] = json!(if ok { "success" } else { "failure" });
        }
        out["odata.metadata"] = json!("$metadata#tasks/@Element");
        out["url"] = json!(format!("/jobs/{job_id}/tasks/{task_id}"));
        out["eTag"] = json!("0x1");
        out["creationTime"] = json!(t.created);
        out["lastModified"] = json!(t.created);
        out["state"] = json!(t.state);
        out["stateTransitionTime"] = json!(t.state_time);
        out["executionInfo"] = execution;
        if t.start.is_some() {
            out["nodeInfo"] = json!({"poolId": POOL, "nodeId": "standin-node-0"});
        }
        // The stand-in holds itself to the specification too: an answer outside CloudTask
        // (OData annotations aside) is a violation the tests see.
        let mut checked = out.clone();
        if let Some(o) = checked.as_object_mut() {
            o.retain(|k, _| !k.starts_with("odata."));
        }
        let errors = validate_answer(
            &self.definitions,
            "CloudTask",
            &checked,
            "CloudTask (the stand-in's answer)",
        );
        self.violations.lock().unwrap().extend(errors);
        HttpResponse::Ok().json(out)
    }

    fn terminate(&self, job_id: &str, task_id: &str) -> HttpResponse {
        let task = match self.task(job_id, task_id) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        let mut t = task.lock().unwrap();
        if t.state == "completed" {
            return error(
                409,
                "TaskCompleted",
                "The specified task is already completed.",
            );
        }
        t.terminate = true;
        if t.state == "active" {
            // Never started: it completes at once, with no exit code of its own.
            finish(&mut t, None, Some(ended_by_user()));
        }
        HttpResponse::NoContent().finish()
    }

    fn delete_task(&self, job_id: &str, task_id: &str) -> HttpResponse {
        let mut jobs = self.jobs.lock().unwrap();
        let Some(job) = jobs.get_mut(&job_id.to_lowercase()) else {
            return error(404, "JobNotFound", "The specified job does not exist.");
        };
        let Some(task) = job.tasks.remove(&task_id.to_lowercase()) else {
            return error(404, "TaskNotFound", "The specified task does not exist.");
        };
        // A running task is terminated first (its thread kills and removes the container).
        task.lock().unwrap().terminate = true;
        HttpResponse::Ok().finish()
    }

    fn file(
        &self,
        req: &HttpRequest,
        head: bool,
        job_id: &str,
        task_id: &str,
        name: &str,
    ) -> HttpResponse {
        let task = match self.task(job_id, task_id) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        let path = {
            let t = task.lock().unwrap();
            if t.start.is_none() {
                return error(
                    409,
                    "TaskNotStarted",
                    "The task has not started on a node yet.",
                );
            }
            t.dir.join(name)
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return error(404, "FileNotFound", "The specified file does not exist.");
        };
        let size = bytes.len() as u64;
        let mut response = HttpResponse::Ok();
        response
            .insert_header(("ocp-batch-file-isdirectory", "False"))
            .insert_header(("ocp-batch-file-url", req.path().to_string()))
            .insert_header(("Content-Type", "application/octet-stream"));
        if head {
            // The server sends the headers of the whole file (its Content-Length), no body.
            return response.body(bytes);
        }
        let range = req
            .headers()
            .get("ocp-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
        let slice = match range {
            Some((start, end)) if start <= end && start < size => {
                bytes[start as usize..=(end.min(size - 1)) as usize].to_vec()
            }
            Some(_) => return error(416, "InvalidRange", "The range is not satisfiable."),
            None => bytes,
        };
        response.body(slice)
    }
}

fn ended_by_user() -> Value {
    json!({"category": "usererror", "code": "TaskEnded", "message": "Task Was Ended by User Request"})
}

fn finish(t: &mut Task, exit_code: Option<i64>, failure: Option<Value>) {
    t.state = "completed";
    t.state_time = now();
    t.end = Some(now());
    t.exit_code = exit_code;
    t.failure = failure;
}

/// Runs the task's command line in its container on the local engine, as a Batch node does:
/// `docker run` with the task's `containerRunOptions`, its environment settings, the image
/// and the command line; stdout and stderr into the task's files.
fn run_task(task: Arc<Mutex<Task>>, label: &str, job_id: &str, max_wall: Option<Duration>) {
    let (body, dir) = {
        let mut t = task.lock().unwrap();
        if t.terminate || t.state == "completed" {
            return;
        }
        t.state = "running";
        t.state_time = now();
        t.start = Some(now());
        (t.body.clone(), t.dir.clone())
    };
    let task_id = body["id"].as_str().unwrap_or_default();
    let name = format!("batch-standin-{label}-{}", task_id.to_lowercase());
    let child = docker_run(&body, label, job_id, &name).and_then(|c| spawn_into(c, &dir));
    let child = match child {
        Ok(child) => child,
        Err(failure) => return finish(&mut task.lock().unwrap(), None, Some(failure)),
    };
    let (status, timed_out) = watch(child, &task, &name, max_wall);
    crate::docker_quietly(&["rm", "-f", &name]);
    let code = status.code().map(i64::from).unwrap_or(137);
    settle(&mut task.lock().unwrap(), code, timed_out);
}

/// The `docker run` a node would make of the task, or the failure Batch reports when its
/// options or command line cannot be split into words.
fn docker_run(body: &Value, label: &str, job_id: &str, name: &str) -> Result<Command, Value> {
    let settings = &body["containerSettings"];
    let task_id = body["id"].as_str().unwrap_or_default();
    let mut command = Command::new("docker");
    command.args([
        "run",
        "--name",
        name,
        "--label",
        &format!("brizo.batch-standin={label}"),
        "--label",
        &format!("brizo.batch-task={task_id}"),
        "--network",
        "host",
        "-e",
        &format!("AZ_BATCH_JOB_ID={job_id}"),
        "-e",
        &format!("AZ_BATCH_TASK_ID={task_id}"),
        "-e",
        "AZ_BATCH_NODE_ID=standin-node-0",
    ]);
    for setting in body["environmentSettings"].as_array().into_iter().flatten() {
        command.args([
            "-e",
            &format!(
                "{}={}",
                setting["name"].as_str().unwrap_or_default(),
                setting["value"].as_str().unwrap_or_default()
            ),
        ]);
    }
    let options = settings["containerRunOptions"].as_str().unwrap_or("");
    let image = settings["imageName"].as_str().unwrap_or_default();
    let command_line = body["commandLine"].as_str().unwrap_or_default();
    match (
        shell_words::split(options),
        shell_words::split(command_line),
    ) {
        (Ok(options), Ok(line)) => {
            command.args(options).arg(image).args(line);
            Ok(command)
        }
        _ => Err(
            json!({"category": "usererror", "code": "CommandLineInvalid",
            "message": "containerRunOptions or commandLine cannot be split into words"}),
        ),
    }
}

/// Starts the command with its output going to the task's stdout.txt and stderr.txt.
fn spawn_into(mut command: Command, dir: &std::path::Path) -> Result<Child, Value> {
    let files = File::create(dir.join("stdout.txt")).and_then(|out| {
        let err = File::create(dir.join("stderr.txt"))?;
        Ok((out, err))
    });
    let (out, err) = files.map_err(|e| {
        json!({"category": "servererror", "code": "TaskFilesUnavailable", "message": e.to_string()})
    })?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| {
            json!({"category": "servererror", "code": "ContainerRuntimeUnavailable", "message": e.to_string()})
        })
}

/// Waits for the container to end, killing it when the task is terminated or outlives its
/// `maxWallClockTime`; its exit status, and whether the wall clock ended it.
fn watch(
    mut child: Child,
    task: &Mutex<Task>,
    name: &str,
    max_wall: Option<Duration>,
) -> (ExitStatus, bool) {
    let started = Instant::now();
    let mut timed_out = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (status, timed_out);
        }
        let terminate = task.lock().unwrap().terminate;
        let over = max_wall.is_some_and(|m| started.elapsed() > m);
        if terminate || over {
            timed_out |= over && !terminate;
            crate::docker_quietly(&["kill", name]);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Completes the task with the exit code and the failure Batch would report for it.
fn settle(t: &mut Task, code: i64, timed_out: bool) {
    if code == 125 && !t.terminate && !timed_out {
        // The engine could not create or start the container (no such image, bad options):
        // a pre-processing failure, the command line never ran.
        let why = std::fs::read_to_string(t.dir.join("stderr.txt")).unwrap_or_default();
        let failure = json!({"category": "usererror", "code": "ContainerCreateFailed",
            "message": why.trim().chars().take(500).collect::<String>()});
        finish(t, None, Some(failure));
    } else if t.terminate {
        finish(t, Some(code), Some(ended_by_user()));
    } else if timed_out {
        let failure = json!({"category": "usererror", "code": "TaskEnded",
            "message": "The task exceeded its maxWallClockTime and was terminated"});
        finish(t, Some(code), Some(failure));
    } else if code != 0 {
        let failure = json!({"category": "usererror", "code": "FailureExitCode",
            "message": "The task process exited with an unexpected exit code"});
        finish(t, Some(code), Some(failure));
    } else {
        finish(t, Some(0), None);
    }
}

/// Batch ids: at most 64 of letters, digits, `-` and `_`.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("{id:?} is not 1 to 64 characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{id:?} has characters other than letters, digits, - and _"
        ));
    }
    Ok(())
}

/// An ISO 8601 duration as Batch's `duration` format takes it (`PT1H30M`, `P1DT2H`, `PT90S`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut secs = 0f64;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let (_, factor) = units.iter().find(|(u, _)| *u == c)?;
            secs += number.parse::<f64>().ok()? * factor;
            number.clear();
            any = true;
        }
        number.is_empty().then_some(())
    };
    take(
        days,
        &[
            ('Y', 365.0 * 86400.0),
            ('M', 30.0 * 86400.0),
            ('W', 7.0 * 86400.0),
            ('D', 86400.0),
        ],
    )?;
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    any.then(|| Duration::from_secs_f64(secs))
}

/// Swagger 2.0 as the Batch specification writes it: `#/definitions/` references, and the one
/// string format whose values the service parses (`duration`).
const SWAGGER: Dialect = Dialect {
    ref_prefix: "#/definitions/",
    string_format: |format, s| {
        (format == "duration" && parse_duration(s).is_none())
            .then(|| format!("{s:?} is not an ISO 8601 duration"))
    },
};

/// Checks `value` against the specification's definition `name`, one line per violation.
pub fn validate(definitions: &Value, name: &str, value: &Value, at: &str) -> Vec<String> {
    schema::check(&SWAGGER, definitions, name, value, at)
}

/// [`validate`] for the stand-in's own answers, which may carry read-only properties.
pub fn validate_answer(definitions: &Value, name: &str, value: &Value, at: &str) -> Vec<String> {
    schema::check_answer(&SWAGGER, definitions, name, value, at)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 3 <= bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Now, as the RFC 3339 UTC time Batch's `date-time` fields hold.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Unix seconds as an RFC 3339 UTC time.
pub(crate) fn rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A folder of the stand-in's, for callers that want to see a task's files.
pub fn task_dir(standin: &BatchStandin, job_id: &str, task_id: &str) -> PathBuf {
    standin
        .state
        .dir
        .join(job_id.to_lowercase())
        .join(task_id.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_iso_8601() {
        assert_eq!(parse_duration("PT90S"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("PT1H30M"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("P1DT1S"), Some(Duration::from_secs(86401)));
        assert_eq!(parse_duration("90"), None);
        assert_eq!(parse_duration("PT"), None);
        assert_eq!(parse_duration("P"), None);
    }

    #[test]
    fn the_checker_refuses_what_the_specification_does_not_define() {
        let spec: Value = serde_json::from_str(SPEC).unwrap();
        let defs = &spec["definitions"];
        let check = |body: Value| validate(defs, "TaskAddParameter", &body, "task");
        let good = json!({"id": "t1", "commandLine": "/bin/true",
            "containerSettings": {"imageName": "busybox", "workingDirectory": "containerImageDefault"},
            "constraints": {"maxWallClockTime": "PT60S", "maxTaskRetryCount": 0},
            "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "nonadmin"}},
            "environmentSettings": [{"name": "A", "value": "b"}]});
        assert_eq!(check(good.clone()), Vec::<String>::new());
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("commandLine");
        assert!(check(missing)[0].contains("commandLine is missing"));
        let mut unknown = good.clone();
        unknown["containerSettings"]["memory"] = json!("1g");
        assert!(check(unknown)[0].contains("containerSettings.memory"));
        let mut badenum = good.clone();
        badenum["userIdentity"]["autoUser"]["elevationLevel"] = json!("root");
        assert!(!check(badenum).is_empty());
        let mut badtype = good.clone();
        badtype["constraints"]["maxTaskRetryCount"] = json!("0");
        assert!(!check(badtype).is_empty());
        let mut baddur = good;
        baddur["constraints"]["maxWallClockTime"] = json!("60s");
        assert!(!check(baddur).is_empty());
    }

    #[test]
    fn task_answers_are_checked_against_cloud_task() {
        let spec: Value = serde_json::from_str(SPEC).unwrap();
        let check = |body: &Value| validate_answer(&spec["definitions"], "CloudTask", body, "task");
        let task = json!({"id": "t1", "state": "completed", "commandLine": "/bin/true",
            "executionInfo": {"retryCount": 0, "requeueCount": 0, "exitCode": 0, "result": "success",
                "startTime": "2026-12-01T12:00:00Z", "endTime": "2026-12-01T12:00:01Z"},
            "nodeInfo": {"poolId": "p", "nodeId": "n"}});
        assert_eq!(check(&task), Vec::<String>::new());
        let mut wrong = task.clone();
        wrong["executionInfo"]["exitcode"] = json!(0);
        assert!(check(&wrong)[0].contains("exitcode"));
        let mut missing = task;
        missing["executionInfo"]
            .as_object_mut()
            .unwrap()
            .remove("requeueCount");
        assert!(check(&missing)[0].contains("requeueCount"));
    }

    #[test]
    fn times_are_rfc_3339() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
