//! brizo-runner: carries out a [`Plan`] inside a job's container on a remote engine.
//!
//! It starts as root (the container's user), because it must place files the job can read but
//! not change and give up root before the algorithm runs. The algorithm then runs as the plan's
//! uid with no capabilities, `no_new_privs`, a process-count limit and a memory watchdog, so
//! these hold even where the engine itself enforces less (moto's Batch ignores every limit).
//! Everything the job reads or returns goes through the plan's presigned URLs: the runner holds
//! no credentials and the algorithm gets none.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use brizo_runner::{Downloaded, PLAN_URL_ENV, Plan, RunResult};
use sha2::Digest;

/// The algorithm's process group, for the SIGTERM handler (Batch's TerminateJob sends SIGTERM to
/// the container's first process, which is us).
static CHILD: AtomicI32 = AtomicI32::new(0);
const ATTEMPTS: u32 = 3;
/// How often the memory watchdog looks: short, because a fast allocation must be seen.
const WATCH_EVERY: Duration = Duration::from_millis(10);

extern "C" fn on_term(_: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // Only async-signal-safe calls here.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

fn main() -> ExitCode {
    let Ok(url) = std::env::var(PLAN_URL_ENV) else {
        eprintln!(
            "brizo-runner: {PLAN_URL_ENV} is not set; this binary runs inside a brizo job, started by a remote backend"
        );
        return ExitCode::from(64);
    };
    let plan: Plan = match get(&url).and_then(|body| {
        serde_json::from_slice(&body).map_err(|e| format!("the plan is not valid: {e}"))
    }) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("brizo-runner: fetching the plan: {e}");
            return ExitCode::from(70);
        }
    };
    let result = run(&plan);
    if let Err(e) = put_bytes(
        &plan.result_url,
        &serde_json::to_vec(&result).expect("a result serializes"),
    ) {
        eprintln!("brizo-runner: reporting the result: {e}");
        return ExitCode::from(70);
    }
    ExitCode::from(result.exit_code.clamp(0, 255) as u8)
}

/// Carries out the plan. Whatever fails, the result says how far it got: whether the
/// algorithm started (a job that never ran must not count as done), its exit code, and what was
/// downloaded.
fn run(plan: &Plan) -> RunResult {
    let mut result = RunResult {
        exit_code: 70,
        oom_killed: false,
        runner_error: None,
        files: vec![],
        algorithm_started: false,
    };
    if let Err(e) = carry_out(plan, &mut result) {
        eprintln!("brizo-runner: {e}");
        // The algorithm's own failure code stays; a success it had is not one any more.
        if result.exit_code == 0 {
            result.exit_code = 70;
        }
        result.runner_error = Some(e);
    }
    result
}

fn carry_out(plan: &Plan, result: &mut RunResult) -> Result<(), String> {
    let (uid, gid) = parse_user(&plan.user)?;
    if uid == 0 || gid == 0 {
        return Err("the plan asks to run the algorithm as root, which the runner refuses".into());
    }
    lay_out(plan, uid, gid, result)?;
    run_algorithm(plan, uid, gid, result)?;
    send_back(plan)
}

/// The plan's folders and downloaded files in place, and its writable folders the
/// algorithm's user's.
fn lay_out(plan: &Plan, uid: u32, gid: u32, result: &mut RunResult) -> Result<(), String> {
    for dir in &plan.dirs {
        make_dir(dir, 0o755)?;
    }
    for file in &plan.files {
        let sha256 = download(&file.url, Path::new(&file.path), file.size)?;
        result.files.push(Downloaded {
            path: file.path.clone(),
            size: file.size,
            sha256,
        });
    }
    for w in &plan.writable {
        make_dir(&w.path, 0o755)?;
        // Every folder above it belongs to root and only root writes there: the job cannot
        // rename its folder away and leave a symlink for the runner to archive.
        for ancestor in Path::new(&w.path).ancestors().skip(1) {
            if ancestor == Path::new("/") || ancestor == Path::new("/tmp") {
                continue;
            }
            std::os::unix::fs::chown(ancestor, Some(0), Some(0))
                .map_err(|e| format!("{}: {e}", ancestor.display()))?;
            fs::set_permissions(ancestor, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", ancestor.display()))?;
        }
        std::os::unix::fs::chown(&w.path, Some(uid), Some(gid))
            .map_err(|e| format!("{}: {e}", w.path))?;
    }

    Ok(())
}

/// Runs the algorithm as `uid`:`gid` with the plan's environment and limits, a watchdog on its
/// memory; its exit code and whether it went over its memory into `result`.
fn run_algorithm(plan: &Plan, uid: u32, gid: u32, result: &mut RunResult) -> Result<(), String> {
    let mut command = Command::new(plan.argv.first().ok_or("the plan has an empty argv")?);
    command.args(&plan.argv[1..]).env_clear();
    // The image's PATH (the runner inherited it), then the plan's variables; nothing else of the
    // runner's environment (Batch puts credential endpoints there) reaches the algorithm.
    command.env(
        "PATH",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    command.envs(plan.env.iter().map(|(k, v)| (k, v)));
    command.current_dir(plan.working_dir.as_deref().unwrap_or("/"));
    let pids = plan.limits.pids;
    unsafe {
        command.pre_exec(move || drop_privileges(uid, gid, pids));
    }
    let child = command
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", plan.argv[0]))?;
    result.algorithm_started = true;
    let pid = child.id() as i32;
    CHILD.store(pid, Ordering::SeqCst);
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }

    let done = Arc::new(AtomicBool::new(false));
    let over_memory = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, over) = (done.clone(), over_memory.clone());
        let limit = plan.limits.memory_bytes;
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                // RSS counts shared pages once per process; confirm with PSS before killing.
                if resident_bytes_of(uid) > limit && proportional_bytes_of(uid) > limit {
                    over.store(true, Ordering::SeqCst);
                    kill_all_of(uid);
                }
                std::thread::sleep(WATCH_EVERY);
            }
        })
    };
    let status = wait_for(pid).map_err(|e| format!("waiting for the algorithm: {e}"))?;
    CHILD.store(0, Ordering::SeqCst);
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    // What the algorithm left running (daemons, forks) ends with it, before anything of its
    // folders is read.
    end_everything_else(uid);
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as i64
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status) as i64
    } else {
        1
    };
    // A peak the watchdog did not catch between two looks still counts as going over.
    let peak = peak_child_rss_bytes();
    result.oom_killed = over_memory.load(Ordering::SeqCst) || peak > plan.limits.memory_bytes;
    result.exit_code = if result.oom_killed && exit_code == 0 {
        137
    } else {
        exit_code
    };
    Ok(())
}

/// The writable folders back to where the plan says, unless they hold more than the
/// publisher's cap.
fn send_back(plan: &Plan) -> Result<(), String> {
    // Checked before anything travels.
    let total: u64 = plan
        .writable
        .iter()
        .map(|w| tree_size(Path::new(&w.path)))
        .sum();
    if total > plan.limits.output_bytes {
        return Err(format!(
            "the job's folders hold {total} bytes, over the publisher's cap of {} bytes; nothing was sent back",
            plan.limits.output_bytes
        ));
    }
    for w in &plan.writable {
        upload_dir(Path::new(&w.path), &w.put_url)?;
    }
    Ok(())
}

/// Waits for `pid`, reaping every other child on the way: as the container's first process
/// the runner inherits the algorithm's orphans, whose zombies would count against its
/// process limit.
fn wait_for(pid: i32) -> io::Result<libc::c_int> {
    loop {
        let (reaped, status) = reap_any()?;
        if reaped == pid {
            return Ok(status);
        }
    }
}

/// Waits for any child to end: its pid and wait status. An error once there is none left.
fn reap_any() -> io::Result<(i32, libc::c_int)> {
    loop {
        let mut status = 0;
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped >= 0 {
            return Ok((reaped, status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Kills every process of the job and reaps them. As pid 1 of the container one signal reaches
/// all of them at once, so none can fork away from it; otherwise they are hunted by uid.
fn end_everything_else(uid: u32) {
    if std::process::id() == 1 {
        unsafe { libc::kill(-1, libc::SIGKILL) };
        while reap_any().is_ok() {}
    } else {
        for _ in 0..5 {
            kill_all_of(uid);
            if processes_of(uid).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Bytes of the regular files under `dir` (symlinks not followed).
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| fs::symlink_metadata(e.path()).ok().map(|m| (e.path(), m)))
        .map(|(path, m)| {
            if m.is_dir() {
                tree_size(&path)
            } else if m.is_file() {
                m.len()
            } else {
                0
            }
        })
        .sum()
}

fn parse_user(user: &str) -> Result<(u32, u32), String> {
    let mut parts = user.splitn(2, ':');
    let uid = parts
        .next()
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| format!("user {user:?} is not uid[:gid]"))?;
    let gid = match parts.next() {
        Some(g) => g
            .parse()
            .map_err(|_| format!("user {user:?} is not uid[:gid]"))?,
        None => uid,
    };
    Ok((uid, gid))
}

/// Runs in the forked child before exec: a session of its own (so one signal reaches every
/// process it makes), then no root, no way back to privileges, a process ceiling, no core dumps.
fn drop_privileges(uid: u32, gid: u32, pids: i64) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        // Counted per uid, so the limit is the job's as long as its uid runs nothing else here.
        let nproc = libc::rlimit {
            rlim_cur: pids as libc::rlim_t,
            rlim_max: pids as libc::rlim_t,
        };
        check(libc::setrlimit(libc::RLIMIT_NPROC, &nproc))?;
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check(libc::setrlimit(libc::RLIMIT_CORE, &core))?;
    }
    Ok(())
}

fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
                .map(|pid| (pid, e.path()))
        })
        .filter(|(_, path)| fs::metadata(path).map(|m| m.uid() == uid).unwrap_or(false))
        .map(|(pid, _)| pid)
        .collect()
}

fn resident_bytes_of(uid: u32) -> u64 {
    processes_of(uid).into_iter().filter_map(rss_bytes).sum()
}

/// Proportional set size: shared pages divided among the processes sharing them. Reading it
/// needs ptrace rights over the process (CAP_SYS_PTRACE, which containers usually lack); where
/// it cannot be read, the process's RSS counts instead.
fn proportional_bytes_of(uid: u32) -> u64 {
    processes_of(uid)
        .into_iter()
        .filter_map(|pid| pss_bytes(pid).or_else(|| rss_bytes(pid)))
        .sum()
}

fn rss_bytes(pid: i32) -> Option<u64> {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    statm
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|pages| pages * page)
}

fn pss_bytes(pid: i32) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

fn kill_all_of(uid: u32) {
    // Twice: a process may fork between the listing and the kill.
    for _ in 0..2 {
        for pid in processes_of(uid) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn peak_child_rss_bytes() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss.max(0) as u64 * 1024
}

fn make_dir(path: &str, mode: u32) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("creating {path}: {e}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| format!("{path}: {e}"))
}

/// One agent for every request, so connections to the store are reused.
fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            // A stalled server is retried rather than waited for until the job's backstop.
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .max_redirects(0)
            .build()
            .into()
    })
}

fn retry<T>(what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let mut last = String::new();
    for n in 0..ATTEMPTS {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(300 << n));
    }
    Err(format!("{what}: {last} (after {ATTEMPTS} attempts)"))
}

/// The path of a `file://` URL: staging in a folder the job's host shares with the service (an
/// on-premise cluster), bound into the container, so the job needs no network at all.
fn local_path(url: &str) -> Option<&Path> {
    url.strip_prefix("file://").map(Path::new)
}

fn get(url: &str) -> Result<Vec<u8>, String> {
    if let Some(path) = local_path(url) {
        return fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    }
    retry("GET", || {
        let mut response = agent().get(url).call().map_err(|e| e.to_string())?;
        response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .map_err(|e| e.to_string())
    })
}

/// Downloads to `path`, hashing on the way; returns the sha256 of what was written.
fn download(url: &str, path: &Path, size: u64) -> Result<String, String> {
    if let Some(parent) = path.parent() {
        make_dir(&parent.to_string_lossy(), 0o755)?;
    }
    let sha256 = retry(&format!("downloading {}", path.display()), || {
        let file = fs::File::create(path).map_err(|e| e.to_string())?;
        let mut sink = Hashing {
            file,
            hasher: sha2::Sha256::new(),
        };
        // One byte over the expected size is enough to know it is wrong.
        let copied = if let Some(source) = local_path(url) {
            let mut reader = io::Read::take(
                fs::File::open(source).map_err(|e| format!("{}: {e}", source.display()))?,
                size + 1,
            );
            io::copy(&mut reader, &mut sink).map_err(|e| e.to_string())?
        } else {
            let mut response = agent().get(url).call().map_err(|e| e.to_string())?;
            let mut reader = response.body_mut().with_config().limit(size + 1).reader();
            io::copy(&mut reader, &mut sink).map_err(|e| e.to_string())?
        };
        if copied != size {
            return Err(format!("got {copied} bytes, expected {size}"));
        }
        Ok(hex::encode(sink.hasher.finalize()))
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(sha256)
}

struct Hashing {
    file: fs::File,
    hasher: sha2::Sha256,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn put_bytes(url: &str, body: &[u8]) -> Result<(), String> {
    if let Some(path) = local_path(url) {
        return write_aside(path, |file| file.write_all(body));
    }
    retry("PUT", || {
        blob_type(agent().put(url), url)
            .send(body)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// Azure Blob's Put Blob needs the blob's type in a header a SAS URL cannot carry; other
/// stores (S3, GCS) get nothing more.
fn blob_type<B>(request: ureq::RequestBuilder<B>, url: &str) -> ureq::RequestBuilder<B> {
    if is_azure_sas(url) {
        request.header("x-ms-blob-type", "BlockBlob")
    } else {
        request
    }
}

/// A URL signed as an Azure Storage SAS (its signed version and signature in the query).
fn is_azure_sas(url: &str) -> bool {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p.split_once('=').is_some_and(|(k, _)| k == name))
    };
    has("sv") && has("sig")
}

/// Sends a folder as one tar archive, streamed: a first pass measures it (S3 needs the length
/// up front), a second writes it into the request. Symlinks are archived as links, never
/// followed: the job could point one at anything in the container.
fn upload_dir(dir: &Path, url: &str) -> Result<(), String> {
    let archive = |sink: &mut dyn Write| -> io::Result<()> {
        let mut builder = tar::Builder::new(sink);
        builder.follow_symlinks(false);
        // Plain entries only: the service unpacks regular files and folders, not sparse ones.
        builder.sparse(false);
        builder.append_dir_all(".", dir)?;
        builder.finish()
    };
    if let Some(path) = local_path(url) {
        return write_aside(path, |file| archive(file))
            .map_err(|e| format!("archiving {}: {e}", dir.display()));
    }
    let mut counter = Counter(0);
    archive(&mut counter).map_err(|e| format!("archiving {}: {e}", dir.display()))?;
    let length = counter.0;
    retry(&format!("uploading {}", dir.display()), || {
        let (reader, mut writer) = io::pipe().map_err(|e| e.to_string())?;
        let dir_shown = dir.display().to_string();
        let producer = std::thread::scope(|scope| {
            let handle = scope.spawn(move || archive(&mut writer));
            let sent = blob_type(agent().put(url), url)
                .header("content-length", length.to_string())
                .send(ureq::SendBody::from_owned_reader(reader))
                .map(|_| ())
                .map_err(|e| e.to_string());
            let archived = handle
                .join()
                .expect("archiving does not panic")
                .map_err(|e| format!("archiving {dir_shown}: {e}"));
            sent.and(archived)
        });
        producer
    })
}

/// Writes a file of the shared staging folder next to its place, then renames it there, so the
/// service never reads half of it.
fn write_aside(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), String> {
    let partial = path.with_extension("partial");
    let mut file = fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    write(&mut file)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    fs::rename(&partial, path).map_err(|e| format!("{}: {e}", path.display()))
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_azure_sas;

    #[test]
    fn only_azure_sas_urls_get_the_blob_type() {
        assert!(is_azure_sas(
            "http://127.0.0.1:10000/devstoreaccount1/staging/jobs/x/result.json?sv=2021-08-06&sp=w&st=a&se=b&sr=b&sig=abc%3D"
        ));
        assert!(!is_azure_sas(
            "http://127.0.0.1:5000/staging/x/result.json?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc"
        ));
        assert!(!is_azure_sas("https://example.org/upload?sig=1"));
    }
}
