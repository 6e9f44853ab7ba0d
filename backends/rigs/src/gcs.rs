//! GCS for tests: the REAL fake-gcs-server (the GCS emulator `scripts/test-deps.sh` installs
//! from PyPI), behind a small proxy of test code that does two things fake-gcs-server does not:
//!
//! - it takes the XML API's object upload (`PUT /<bucket>/<object>`, what object_store and
//!   signed upload URLs use) and hands it to fake-gcs-server's JSON media upload;
//! - it checks credentials as GCS would: every request carries either a bearer token (a
//!   self-signed JWT of the test service account, RS256, checked with its public key) or a V4
//!   signed URL (`X-Goog-Signature`, recomputed from the request as received and checked with
//!   the same public key; expired ones are refused). fake-gcs-server checks neither.
//!
//! object_store signs V4 URLs for the host `storage.googleapis.com` whatever its base URL, so
//! the proxy, standing where that host would be, checks signatures against that host.
//!
//! Everything else (reads, ranges, listings, deletes, metadata) is fake-gcs-server's own.
//! Not translated: the XML API's multipart uploads (object_store uses them for files over 10 MiB),
//! so tests stage only smaller files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use serde_json::Value;
use sha2::Digest;

/// The test service account (a throw-away key, no Google credential): its JSON key, as
/// `GOOGLE_SERVICE_ACCOUNT_KEY` takes it.
pub const SERVICE_ACCOUNT_KEY: &str = include_str!("../fixtures/gcp/test-service-account.json");
/// Its public key (PKCS#1 DER), which the proxy and the stand-in check signatures with.
pub const PUBLIC_KEY: &[u8] = include_bytes!("../fixtures/gcp/test-service-account.pub.der");
/// The host object_store signs URLs for.
pub const SIGNED_HOST: &str = "storage.googleapis.com";

/// The test service account's email.
pub fn service_account_email() -> String {
    let key: Value = serde_json::from_str(SERVICE_ACCOUNT_KEY).expect("the key is JSON");
    key["client_email"].as_str().unwrap_or_default().to_string()
}

pub struct Gcs {
    /// `http://127.0.0.1:PORT`: the proxy, the base URL clients use.
    pub url: String,
    /// fake-gcs-server itself, for a look behind the proxy.
    pub emulator_url: String,
    state: Arc<ProxyState>,
    server: actix_web::dev::ServerHandle,
    emulator: Child,
    seed: PathBuf,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    email: String,
    violations: Mutex<Vec<String>>,
    /// Requests served through a signed URL, as `METHOD /path`.
    signed: Mutex<Vec<String>>,
}

impl Gcs {
    /// fake-gcs-server (the binary under `<root>/.state/tools/`) on a free port, seeded with
    /// `buckets` (empty), and the proxy on `port` (0: a free one).
    pub fn start(root: &Path, port: u16, buckets: &[&str]) -> Result<Gcs, String> {
        let bin = root.join(".state/tools/fake-gcs-server");
        if !bin.exists() {
            return Err(format!(
                "{} is missing: run scripts/test-deps.sh",
                bin.display()
            ));
        }
        let seed = std::env::temp_dir().join(format!(
            "brizo-fake-gcs-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        for bucket in buckets {
            std::fs::create_dir_all(seed.join(bucket)).map_err(|e| e.to_string())?;
        }
        let emulator_port = crate::free_port();
        let emulator_url = format!("http://127.0.0.1:{emulator_port}");
        // A watcher ends the emulator if this process dies first.
        let script = format!(
            "\"$0\" -scheme http -host 127.0.0.1 -port {emulator_port} -backend memory \
             -public-host 127.0.0.1:{emulator_port} -data \"$1\" & child=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done; kill $child 2>/dev/null",
            parent = std::process::id()
        );
        let emulator = Command::new("setsid")
            .args(["sh", "-c", &script])
            .arg(&bin)
            .arg(&seed)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting fake-gcs-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", emulator_port)).is_err() {
            if Instant::now() > deadline {
                return Err("fake-gcs-server did not come up in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let state = Arc::new(ProxyState {
            upstream: emulator_url.clone(),
            http: reqwest::Client::new(),
            email: service_account_email(),
            violations: Mutex::new(vec![]),
            signed: Mutex::new(vec![]),
        });
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("binding the GCS proxy: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = crate::serve(listener, state.clone(), proxy, 64 << 20)?;
        Ok(Gcs {
            url: format!("http://{addr}"),
            emulator_url,
            state,
            server,
            emulator,
            seed,
        })
    }

    /// Requests refused for their credentials, in words.
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Requests that came through a (valid) signed URL, as `METHOD /path`.
    pub fn signed_requests(&self) -> Vec<String> {
        self.state.signed.lock().unwrap().clone()
    }

    /// Puts an object straight into fake-gcs-server (JSON media upload), for test data.
    pub fn put(&self, bucket: &str, object: &str, bytes: &[u8]) -> Result<(), String> {
        let status = Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "-X",
                "POST",
                "--data-binary",
                "@-",
            ])
            .arg(format!(
                "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
                self.emulator_url,
                encode(object)
            ))
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(bytes)?;
                c.wait()
            })
            .map_err(|e| e.to_string())?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("uploading gs://{bucket}/{object} failed"))
    }

    /// Reads an object straight from fake-gcs-server; `None` when it does not exist.
    pub fn get(&self, bucket: &str, object: &str) -> Option<Vec<u8>> {
        let out = Command::new("curl")
            .args(["-sf"])
            .arg(format!(
                "{}/storage/v1/b/{bucket}/o/{}?alt=media",
                self.emulator_url,
                encode(object)
            ))
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    }
}

impl Drop for Gcs {
    fn drop(&mut self) {
        drop(self.server.stop(false));
        let _ = Command::new("pkill")
            .args(["-P", &self.emulator.id().to_string()])
            .status();
        let _ = self.emulator.kill();
        let _ = self.emulator.wait();
        let _ = std::fs::remove_dir_all(&self.seed);
    }
}

fn refuse(state: &ProxyState, status: u16, reason: &str, message: String) -> HttpResponse {
    state.violations.lock().unwrap().push(message.clone());
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .content_type("application/xml")
        .body(format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{reason}</Code><Message>{message}</Message></Error>"
        ))
}

async fn proxy(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<ProxyState>>,
) -> HttpResponse {
    let state = state.get_ref().clone();
    let query = parse_query(req.query_string());
    if let Some(refused) = authentication_refusal(&state, &req, &query) {
        return refused;
    }
    let upstream = match upstream_url(&state, &req, &query) {
        Ok(url) => url,
        Err(refused) => return *refused,
    };
    let method = if req.method() == actix_web::http::Method::PUT {
        reqwest::Method::POST
    } else {
        reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap()
    };
    let mut request = state.http.request(method, &upstream).body(body.to_vec());
    for (name, value) in req.headers() {
        let n = name.as_str();
        if matches!(
            n,
            "host" | "authorization" | "content-length" | "connection"
        ) {
            continue;
        }
        request = request.header(n, value.as_bytes());
    }
    match request.send().await {
        Ok(response) => as_gcs_answers(&req, response).await,
        Err(e) => HttpResponse::BadGateway().body(format!("fake-gcs-server: {e}")),
    }
}

/// Checks the request's credential as GCS does: a V4 signed URL, or a service account's
/// bearer token; the refusal GCS would answer, if any. Signed requests are recorded.
fn authentication_refusal(
    state: &ProxyState,
    req: &HttpRequest,
    query: &[(String, String)],
) -> Option<HttpResponse> {
    let signed = query.iter().any(|(k, _)| k == "X-Goog-Signature");
    if signed {
        if let Err(why) = check_signed_url(req, query, SystemTime::now()) {
            return Some(refuse(state, 403, "SignatureDoesNotMatch", why));
        }
        state
            .signed
            .lock()
            .unwrap()
            .push(format!("{} {}", req.method(), req.path()));
    } else {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return Some(refuse(
                state,
                401,
                "AuthenticationRequired",
                format!("{} {}: no credentials", req.method(), req.path()),
            ));
        };
        if let Err(why) = check_jwt(token, &state.email, SystemTime::now()) {
            return Some(refuse(state, 401, "InvalidAuthentication", why));
        }
    }
    None
}

/// Where fake-gcs-server serves the request: the XML API's upload (a PUT) as the JSON API's
/// media upload, anything else at the same path without the signature's parameters.
fn upstream_url(
    state: &ProxyState,
    req: &HttpRequest,
    query: &[(String, String)],
) -> Result<String, Box<HttpResponse>> {
    Ok(if req.method() == actix_web::http::Method::PUT {
        let path = req.path().trim_start_matches('/');
        let Some((bucket, object)) = path.split_once('/') else {
            return Err(Box::new(refuse(
                state,
                400,
                "InvalidURI",
                format!("PUT {path}: no object"),
            )));
        };
        format!(
            "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
            state.upstream,
            encode(&decode(object))
        )
    } else {
        let unsigned: Vec<String> = query
            .iter()
            .filter(|(k, _)| !k.starts_with("X-Goog-"))
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let mut url = format!("{}{}", state.upstream, req.path());
        if !unsigned.is_empty() {
            url.push('?');
            url.push_str(&unsigned.join("&"));
        }
        url
    })
}

/// fake-gcs-server's answer as GCS's XML API gives it: a HEAD keeps the object's length, an
/// upload answers its ETag and generation without a body.
async fn as_gcs_answers(req: &HttpRequest, response: reqwest::Response) -> HttpResponse {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap_or_default();
    let mut out = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    for (name, value) in &headers {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        out.insert_header((name.as_str(), value.as_bytes()));
    }
    if req.method() == actix_web::http::Method::HEAD {
        // actix declares the length of the body it is given and sends none of it for a
        // HEAD: a body of the object's length (test objects are small) keeps its size.
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return out.body(vec![0u8; length]);
    }
    if req.method() == actix_web::http::Method::PUT && (200..300).contains(&status) {
        // The XML API answers an upload with the object's ETag and generation, no body.
        let object: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(etag) = object["etag"].as_str() {
            out.insert_header(("ETag", format!("\"{etag}\"")));
        }
        if let Some(generation) = object["generation"].as_str() {
            out.insert_header(("x-goog-generation", generation));
        }
        return out.finish();
    }
    out.body(bytes)
}

/// Checks a V4 signed request as GCS does: the canonical request rebuilt from the request as
/// received (method, path, the query without the signature, the signed `host`), the string to
/// sign, an RSA-SHA256 signature by the test service account, and the expiry.
pub fn check_signed_url(
    req: &HttpRequest,
    query: &[(String, String)],
    now: SystemTime,
) -> Result<(), String> {
    check_v4(
        req.method().as_str(),
        req.path(),
        query,
        SIGNED_HOST,
        PUBLIC_KEY,
        now,
    )
}

/// The V4 check on its parts, so that it can be tried on Google's published example.
pub fn check_v4(
    method: &str,
    path: &str,
    query: &[(String, String)],
    host: &str,
    public_key: &[u8],
    now: SystemTime,
) -> Result<(), String> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("{method} {path}: the signed URL has no {name}"))
    };
    if get("X-Goog-Algorithm")? != "GOOG4-RSA-SHA256" {
        return Err(format!("{method} {path}: not GOOG4-RSA-SHA256"));
    }
    let credential = get("X-Goog-Credential")?;
    let date = get("X-Goog-Date")?;
    let expires: u64 = get("X-Goog-Expires")?
        .parse()
        .map_err(|_| format!("{method} {path}: X-Goog-Expires is not a number"))?;
    if expires > 604_800 {
        return Err(format!("{method} {path}: expires after more than 7 days"));
    }
    let signed_headers = get("X-Goog-SignedHeaders")?;
    if signed_headers != "host" {
        return Err(format!(
            "{method} {path}: signs headers {signed_headers:?} the client would have to send"
        ));
    }
    let signature = get("X-Goog-Signature")?;
    let start = parse_goog_date(date).ok_or_else(|| format!("{method} {path}: bad X-Goog-Date"))?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now > start + expires {
        return Err(format!("{method} {path}: the signed URL expired"));
    }
    if now + 900 < start {
        return Err(format!(
            "{method} {path}: the signed URL is from the future"
        ));
    }
    let scope = credential
        .split_once('/')
        .map(|(_, s)| s)
        .ok_or_else(|| format!("{method} {path}: X-Goog-Credential has no scope"))?;
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "X-Goog-Signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    pairs.sort();
    let canonical_query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical =
        format!("{method}\n{path}\n{canonical_query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let digest = sha2::Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let string_to_sign = format!("GOOG4-RSA-SHA256\n{date}\n{scope}\n{hex}");
    let signature =
        unhex(signature).ok_or_else(|| format!("{method} {path}: signature is not hex"))?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    )
    .verify(string_to_sign.as_bytes(), &signature)
    .map_err(|_| {
        format!(
            "{method} {path}: the signature does not match; the canonical request was {canonical:?}"
        )
    })
}

/// Checks a bearer token that is a self-signed JWT of the test service account: RS256 by its
/// key, issued by its email, for the cloud-platform scope, not expired.
pub fn check_jwt(token: &str, email: &str, now: SystemTime) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the bearer token is not a JWT".into());
    };
    let signature = b64
        .decode(signature)
        .map_err(|_| "the JWT's signature is not base64url".to_string())?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        PUBLIC_KEY,
    )
    .verify(format!("{header}.{claims}").as_bytes(), &signature)
    .map_err(|_| "the JWT is not signed by the test service account".to_string())?;
    let header: Value = b64
        .decode(header)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the JWT header is not JSON")?;
    if header["alg"] != "RS256" {
        return Err(format!("the JWT is {}, not RS256", header["alg"]));
    }
    let claims: Value = b64
        .decode(claims)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the JWT claims are not JSON")?;
    if claims["iss"].as_str() != Some(email) {
        return Err(format!(
            "the JWT is issued by {}, not {email}",
            claims["iss"]
        ));
    }
    if !claims["scope"]
        .as_str()
        .unwrap_or("")
        .split(' ')
        .any(|s| s == "https://www.googleapis.com/auth/cloud-platform")
    {
        return Err("the JWT is not for the cloud-platform scope".into());
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if claims["exp"].as_u64().unwrap_or(0) < now {
        return Err("the JWT expired".into());
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
fn parse_goog_date(s: &str) -> Option<u64> {
    // Exactly the basic format: chrono alone would also take space-padded fields.
    let basic = |(i, b): (usize, &u8)| match i {
        8 => *b == b'T',
        15 => *b == b'Z',
        _ => b.is_ascii_digit(),
    };
    if s.len() != 16 || !s.as_bytes().iter().enumerate().all(basic) {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    u64::try_from(t.and_utc().timestamp()).ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A query string's pairs, decoded (`+` is a space, as in forms).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn decode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Google's published V4 signing examples (googleapis/conformance-tests,
    /// storage/v1/v4_signatures.json at 041480c110f764db8ad21d8d756a1d6e67855fe7, signed with
    /// the inactive dummy key of storage/v1/service-account, whose public half is
    /// fixtures/gcp/google-v4-example.pub.der): the checker accepts them as published and
    /// refuses them changed in any part.
    #[test]
    fn the_v4_check_accepts_googles_published_examples_and_nothing_else() {
        let key: &[u8] = include_bytes!("../fixtures/gcp/google-v4-example.pub.der");
        let credential = "test-iam-credentials%40dummy-project-id.iam.gserviceaccount.com%2F20190201%2Fauto%2Fstorage%2Fgoog4_request";
        let get = format!(
            "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential={credential}&X-Goog-Date=20190201T090000Z&X-Goog-Expires=10&X-Goog-SignedHeaders=host&X-Goog-Signature=95e6a13d43a1d1962e667f17397f2b80ac9bdd1669210d5e08e0135df9dff4e56113485dbe429ca2266487b9d1796ebdee2d7cf682a6ef3bb9fbb4c351686fba90d7b621cf1c4eb1fdf126460dd25fa0837dfdde0a9fd98662ce60844c458448fb2b352c203d9969cb74efa4bdb742287744a4f2308afa4af0e0773f55e32e92973619249214b97283b2daa14195244444e33f938138d1e5f561088ce8011f4986dda33a556412594db7c12fc40e1ff3f1bedeb7a42f5bcda0b9567f17f65855f65071fabb88ea12371877f3f77f10e1466fff6ff6973b74a933322ff0949ce357e20abe96c3dd5cfab42c9c83e740a4d32b9e11e146f0eb3404d2e975896f74"
        );
        let put = format!(
            "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential={credential}&X-Goog-Date=20190201T090000Z&X-Goog-Expires=10&X-Goog-SignedHeaders=host&X-Goog-Signature=8adff1d4285739e31aa68e73767a46bc5511fde377497dbe08481bf5ceb34e29cc9a59921748d8ec3dd4085b7e9b7772a952afedfcdaecb3ae8352275b8b7c867f204e3db85076220a3127a8a9589302fc1181eae13b9b7fe41109ec8cdc93c1e8bac2d7a0cc32a109ca02d06957211326563ab3d3e678a0ba296e298b5fc5e14593c99d444c94724cc4be97015dbff1dca377b508fa0cb7169195de98d0e4ac96c42b918d28c8d92d33e1bd125ce0fb3cd7ad2c45dae65c22628378f6584971b8bf3945b26f2611eb651e9b6a8648970c1ecf386bb71327b082e7296c4e1ee2fc0bdd8983da80af375c817fb1ad491d0bc22c0f51dba0d66e2cffbc90803e47"
        );
        let encoded = format!(
            "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential={credential}&X-Goog-Date=20190201T090000Z&X-Goog-Expires=10&X-Goog-SignedHeaders=host&souffl%C3%A9=%3D%25-_.~&X-Goog-Signature=38dd9ca622b80bca10f405e7d9ba0f0fbea719ca84d66078a484c5b54b1ce98e3fa8a0d2065216ed6ac03179be69312dabf428f8171b95994bdafe465a6f7893bacc7213a7bf4054ce2d78d4b60c34df24cc43e509ad7c81be47148d43a0e67d50d8fe38c85b0c63f9a51149b4f3335315946fef8ab34315ce3f6ce01f1831abb3eda5e7e211823855ed1767c65a8c7aeec357de096e3406897acfe092fead51bbea7df83e25a6180f80c8a0871e4901c370f77f5675f2405be7ccd55fd6dd22a87cf0adfafdb3f6fa99974fcf6c947b62294eebd7954e546c28f5490a6c50694c0e4882fcfe0d4a4ae8891a92579d6099a9b4c84d9f033a3b339163b6670b7e"
        );
        // 2019-02-01T09:00:05Z: within the examples' 10 seconds.
        let at = UNIX_EPOCH + Duration::from_secs(1_549_011_605);
        let check = |method: &str, path: &str, query: &str, host: &str, at: SystemTime| {
            check_v4(method, path, &parse_query(query), host, key, at)
        };
        let host = "storage.googleapis.com";
        assert_eq!(
            check("GET", "/test-bucket/test-object", &get, host, at),
            Ok(())
        );
        assert_eq!(
            check("PUT", "/test-bucket/test-object", &put, host, at),
            Ok(())
        );
        assert_eq!(
            check("GET", "/test-bucket/test-object", &encoded, host, at),
            Ok(())
        );
        assert!(check("PUT", "/test-bucket/test-object", &get, host, at).is_err());
        assert!(check("GET", "/test-bucket/other-object", &get, host, at).is_err());
        assert!(
            check(
                "GET",
                "/test-bucket/test-object",
                &get,
                "127.0.0.1:4443",
                at
            )
            .is_err()
        );
        let tampered = get.replace("X-Goog-Expires=10", "X-Goog-Expires=11");
        assert!(check("GET", "/test-bucket/test-object", &tampered, host, at).is_err());
        let later = UNIX_EPOCH + Duration::from_secs(1_549_011_611);
        assert!(
            check("GET", "/test-bucket/test-object", &get, host, later)
                .unwrap_err()
                .contains("expired")
        );
        assert!(
            check_v4(
                "GET",
                "/test-bucket/test-object",
                &parse_query(&get),
                host,
                PUBLIC_KEY,
                at
            )
            .is_err(),
            "another key's signature passed"
        );
    }

    #[test]
    fn goog_dates_are_read() {
        assert_eq!(parse_goog_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_goog_date("20190201T090000Z"), Some(1_549_011_600));
        assert_eq!(parse_goog_date("2019-02-01"), None);
        assert_eq!(parse_goog_date("2019 2 1T090000Z"), None);
        assert_eq!(parse_goog_date("20191301T090000Z"), None);
    }
}
