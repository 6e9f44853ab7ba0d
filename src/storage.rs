//! object_store wiring: fetching remote inputs on a user's behalf, and the results store.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Refused(String),
    #[error("{url}: larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: {message}")]
    Fetch { url: String, message: String },
    #[error("results store: {0}")]
    Results(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Schemes fetched through object_store.
pub const REMOTE_SCHEMES: &[&str] = &["s3", "az", "abfs", "gs", "http", "https"];

/// Parses and vets a URL a user asked us to fetch. For http(s) the host must not resolve to
/// loopback, private or link-local addresses unless `allow_private` (a user must not be able to
/// make the publisher's machine read its own network).
pub async fn vet_remote_url(raw: &str, allow_private: bool) -> Result<Url, StorageError> {
    let url =
        Url::parse(raw).map_err(|e| StorageError::Refused(format!("{raw}: not a URL ({e})")))?;
    if !REMOTE_SCHEMES.contains(&url.scheme()) {
        return Err(StorageError::Refused(format!(
            "{raw}: scheme {:?} is not supported (use file://, s3://, az://, gs://, http:// or https://)",
            url.scheme()
        )));
    }
    if let Some(why) = store_not_built(url.scheme()) {
        return Err(StorageError::Refused(format!("{raw}: {why}")));
    }
    if matches!(url.scheme(), "http" | "https") {
        resolve_vetted(&url, allow_private).await?;
    }
    Ok(url)
}

/// Why this build cannot reach a cloud store's scheme, if it cannot: the cloud stores are the
/// `object-stores` cargo feature, off in the default build (every cloud backend turns it on).
pub fn store_not_built(scheme: &str) -> Option<String> {
    let cloud = matches!(scheme, "s3" | "az" | "abfs" | "gs");
    (cloud && !cfg!(feature = "object-stores")).then(|| {
        format!(
            "{scheme}:// stores are not in this build of brizo; build it with \
             `cargo build --features object-stores` (or a cloud backend's feature)"
        )
    })
}

/// The addresses an http(s) URL's host resolves to, all of them public unless `allow_private`.
/// The fetch then connects to exactly these (no second lookup a DNS rebinding could change).
async fn resolve_vetted(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, StorageError> {
    let shown = redact(url);
    let host = url
        .host_str()
        .ok_or_else(|| StorageError::Refused(format!("{shown}: no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| StorageError::Fetch {
                url: shown.clone(),
                message: format!("cannot resolve host: {e}"),
            })?
            .collect(),
    };
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(&a.ip())) {
        return Err(StorageError::Refused(format!(
            "{shown}: resolves to {}, a loopback, private or link-local address; \
             the publisher can allow it with inputs.allow_private_addresses",
            bad.ip()
        )));
    }
    Ok(addrs)
}

fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10 carrier NAT
                || v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18 // 198.18/15 benchmarking
                || v4.octets()[0] >= 240 // 240/4 reserved
                || v4.octets()[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(&IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // Addresses that carry an IPv4 address reach it: judge that one.
            let embedded = |hi: u16, lo: u16| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                ))
            };
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                return is_public(&embedded(seg[6], seg[7])); // NAT64 64:ff9b::/96
            }
            if seg[0] == 0x2002 {
                return is_public(&embedded(seg[1], seg[2])); // 6to4 2002::/16
            }
            if seg[..6] == [0, 0, 0, 0, 0, 0] {
                return false; // ::/96, IPv4-compatible (deprecated) and the like
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link local
                || (seg[0] & 0xffc0) == 0xfec0) // site local (deprecated)
        }
    }
}

/// Streams `url` into `dest`, stopping with an error once more than `limit` bytes arrive.
/// http(s) goes to the vetted addresses only and follows no redirect (a public URL must not
/// bounce the fetch into the publisher's network). s3/az/gs go through object_store with the
/// publisher's credentials from the environment (AWS_*, AZURE_*, GOOGLE_*).
pub async fn fetch_to_file(
    url: &Url,
    dest: &Path,
    limit: u64,
    allow_private: bool,
) -> Result<u64, StorageError> {
    let result = fetch_into(url, dest, limit, allow_private).await;
    if result.is_err() {
        // Nothing half-written (or left from an earlier attempt) may pass for the input.
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

type ByteStream = futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>;

/// Opens `url` for reading: http(s) to the vetted addresses only, without redirects; the rest
/// through object_store. Fails early when the size is known to exceed `limit`.
async fn open_stream(
    url: &Url,
    limit: u64,
    allow_private: bool,
) -> Result<ByteStream, StorageError> {
    let fetch_err = |message: String| StorageError::Fetch {
        url: redact(url),
        message,
    };
    let stream: ByteStream = if matches!(url.scheme(), "http" | "https") {
        let addrs = resolve_vetted(url, allow_private).await?;
        let mut client = reqwest::Client::builder()
            // A proxy would resolve the name again, behind the vetted addresses' back.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60));
        if let Some(host) = url
            .host_str()
            .filter(|h| h.parse::<IpAddr>().is_err() && !h.starts_with('['))
        {
            client = client.resolve_to_addrs(host, &addrs);
        }
        let client = client.build().map_err(|e| fetch_err(e.to_string()))?;
        let res = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| fetch_err(e.without_url().to_string()))?;
        if res.status().is_redirection() {
            let to = res
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .map(|l| redact(&l))
                .unwrap_or_else(|| "elsewhere".into());
            return Err(fetch_err(format!(
                "redirects to {to}; redirects are not followed, give the final URL"
            )));
        }
        if !res.status().is_success() {
            return Err(fetch_err(format!("answered {}", res.status())));
        }
        if res.content_length().is_some_and(|n| n > limit) {
            return Err(StorageError::TooLarge {
                url: redact(url),
                limit,
            });
        }
        res.bytes_stream()
            .map(|r| r.map_err(|e| e.without_url().to_string()))
            .boxed()
    } else {
        let (store, path) = object_store::parse_url_opts(url, std::env::vars())
            .map_err(|e| fetch_err(e.to_string()))?;
        let result = store
            .get(&path)
            .await
            .map_err(|e| fetch_err(e.to_string()))?;
        result
            .into_stream()
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed()
    };
    Ok(stream)
}

async fn fetch_into(
    url: &Url,
    dest: &Path,
    limit: u64,
    allow_private: bool,
) -> Result<u64, StorageError> {
    let fetch_err = |message: String| StorageError::Fetch {
        url: redact(url),
        message,
    };
    let mut stream = open_stream(url, limit, allow_private).await?;
    let mut file = tokio::fs::File::create(dest).await?;
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(fetch_err)?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(StorageError::TooLarge {
                url: redact(url),
                limit,
            });
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(written)
}

/// Reads `url` into memory, at most `limit` bytes, within `timeout`.
pub async fn fetch_bytes(
    url: &Url,
    limit: u64,
    allow_private: bool,
    timeout: Duration,
) -> Result<Vec<u8>, StorageError> {
    let read = async {
        let mut stream = open_stream(url, limit, allow_private).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|message| StorageError::Fetch {
                url: redact(url),
                message,
            })?;
            if (out.len() + chunk.len()) as u64 > limit {
                return Err(StorageError::TooLarge {
                    url: redact(url),
                    limit,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| StorageError::Fetch {
            url: redact(url),
            message: format!("no answer within {timeout:?}"),
        })?
}

/// A URL as it may appear in logs and errors: no user info, no query (signed URLs carry secrets).
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}

/// Where outputs and logs are published: `<job id>/outputs/<name>` and `<job id>/logs/algorithm.log`.
#[derive(Clone)]
pub struct ResultsStore {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    url: String,
}

impl ResultsStore {
    pub fn open(url: &str) -> Result<Self, StorageError> {
        let parsed = Url::parse(url)
            .map_err(|e| StorageError::Results(format!("outputs.results_url {url:?}: {e}")))?;
        if parsed.scheme() == "file" {
            std::fs::create_dir_all(parsed.path())?;
        }
        if let Some(why) = store_not_built(parsed.scheme()) {
            return Err(StorageError::Results(format!(
                "outputs.results_url {url:?}: {why}"
            )));
        }
        let (store, prefix) = object_store::parse_url_opts(&parsed, std::env::vars())
            .map_err(|e| StorageError::Results(format!("outputs.results_url {url:?}: {e}")))?;
        Ok(Self {
            store: Arc::from(store),
            prefix,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    fn key(&self, job_id: &str, rel: &str) -> StorePath {
        let mut key = self.prefix.clone();
        for part in job_id
            .split('/')
            .chain(rel.split('/'))
            .filter(|p| !p.is_empty())
        {
            key = key.join(part);
        }
        key
    }

    /// Copies a local file into the store and returns its size and hex sha256, both computed
    /// from the bytes actually sent.
    pub async fn put_file(
        &self,
        job_id: &str,
        rel: &str,
        file: &Path,
    ) -> Result<(u64, String), StorageError> {
        use tokio::io::AsyncReadExt;
        let key = self.key(job_id, rel);
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), key);
        let mut reader = tokio::fs::File::open(file).await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = writer.write_all(&buf[..n]).await {
                let _ = writer.abort().await;
                return Err(StorageError::Results(e.to_string()));
            }
        }
        writer
            .shutdown()
            .await
            .map_err(|e| StorageError::Results(e.to_string()))?;
        Ok((size, hex::encode(hasher.finalize())))
    }

    pub async fn get(
        &self,
        job_id: &str,
        rel: &str,
    ) -> Result<Option<object_store::GetResult>, StorageError> {
        match self.store.get(&self.key(job_id, rel)).await {
            Ok(r) => Ok(Some(r)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StorageError::Results(e.to_string())),
        }
    }

    /// Deletes everything published for a job.
    pub async fn delete_job(&self, job_id: &str) -> Result<(), StorageError> {
        let prefix = self.key(job_id, "");
        let locations = self
            .store
            .list(Some(&prefix))
            .map(|m| m.map(|m| m.location))
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StorageError::Results(e.to_string())),
            }
        }
        if self.url.starts_with("file://") {
            // The local store leaves empty folders behind.
            let dir = Path::new(self.url.trim_start_matches("file://")).join(job_id);
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        Ok(())
    }

    /// Where a published object lives, for people (never carries credentials).
    pub fn location(&self, job_id: &str, rel: &str) -> String {
        format!("{}/{job_id}/{rel}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without the cloud stores refuses their schemes up front with the way out, and
    /// http(s) and file:// are in every build.
    #[tokio::test]
    async fn cloud_schemes_are_refused_with_a_hint_when_not_built() {
        let built = cfg!(feature = "object-stores");
        for scheme in ["s3", "az", "abfs", "gs"] {
            assert_eq!(store_not_built(scheme).is_none(), built, "{scheme}");
        }
        for scheme in ["http", "https", "file"] {
            assert!(store_not_built(scheme).is_none(), "{scheme}");
        }
        let vetted = vet_remote_url("s3://bucket/key", false).await;
        match (built, vetted) {
            (true, Ok(url)) => assert_eq!(url.scheme(), "s3"),
            (false, Err(e)) => assert!(e.to_string().contains("--features object-stores"), "{e}"),
            (_, other) => panic!("object-stores built: {built}, vetted: {other:?}"),
        }
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/x",
            "http://localhost:8030/x",
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[fe80::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://0.0.0.0/x",
            "http://[64:ff9b::a9fe:a9fe]/latest", // NAT64 to 169.254.169.254
            "http://[2002:0a00:0001::1]/x",       // 6to4 of 10.0.0.1
            "http://[::10.0.0.1]/x",
            "http://[fec0::1]/x",
            "http://198.18.0.1/x",
            "http://240.0.0.1/x",
            "http://224.0.0.1/x",
        ] {
            let err = vet_remote_url(url, false).await.unwrap_err();
            assert!(matches!(err, StorageError::Refused(_)), "{url}: {err}");
        }
        assert!(vet_remote_url("http://127.0.0.1/x", true).await.is_ok());
        assert!(vet_remote_url("http://8.8.8.8/x", false).await.is_ok());
        assert!(
            vet_remote_url("http://[64:ff9b::808:808]/x", false)
                .await
                .is_ok(),
            "NAT64 of a public address"
        );
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused() {
        for url in [
            "ftp://example.com/x",
            "gopher://x",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(
                    vet_remote_url(url, true).await,
                    Err(StorageError::Refused(_))
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn redaction_hides_credentials_and_signatures() {
        let url =
            Url::parse("https://user:secret@example.com/data.csv?X-Amz-Signature=abc").unwrap();
        let shown = redact(&url);
        assert!(
            !shown.contains("secret") && !shown.contains("abc"),
            "{shown}"
        );
    }

    /// A minimal HTTP/1.1 server on loopback: `/data` answers a body, `/redirect` a 302 to
    /// `/data`. It is the remote data source itself, not a stand-in for part of brizo.
    async fn http_server(body: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).to_string();
                    let response = if request.starts_with("GET /redirect") {
                        format!("HTTP/1.1 302 Found\r\nLocation: http://{addr}/data\r\nContent-Length: 0\r\n\r\n").into_bytes()
                    } else if request.starts_with("GET /data") {
                        let mut r =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        r.extend_from_slice(body);
                        r
                    } else {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
                    };
                    let _ = sock.write_all(&response).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_fetches_stream_with_a_cap_and_follow_no_redirect() {
        let addr = http_server(b"0123456789").await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("got");
        let url = |p: &str| Url::parse(&format!("http://{addr}{p}")).unwrap();
        assert_eq!(
            fetch_to_file(&url("/data"), &dest, 100, true)
                .await
                .unwrap(),
            10
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"0123456789");
        let too_large = fetch_to_file(&url("/data"), &dest, 5, true)
            .await
            .unwrap_err();
        assert!(
            matches!(too_large, StorageError::TooLarge { .. }),
            "{too_large}"
        );
        assert!(!dest.exists(), "a refused download leaves no partial file");
        let redirect = fetch_to_file(&url("/redirect"), &dest, 100, true)
            .await
            .unwrap_err();
        assert!(
            redirect.to_string().contains("redirects are not followed"),
            "{redirect}"
        );
        let missing = fetch_to_file(&url("/nothing"), &dest, 100, true)
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("404"), "{missing}");
        // Without the publisher's permission, loopback is refused at fetch time too.
        let refused = fetch_to_file(&url("/data"), &dest, 100, false)
            .await
            .unwrap_err();
        assert!(matches!(refused, StorageError::Refused(_)), "{refused}");
    }

    #[tokio::test]
    async fn results_round_trip_on_local_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultsStore::open(&format!("file://{}", dir.path().display())).unwrap();
        let src = dir.path().join("src.txt");
        std::fs::write(&src, b"hello").unwrap();
        let (size, sha) = store
            .put_file("job1", "outputs/a/b.txt", &src)
            .await
            .unwrap();
        assert_eq!(size, 5);
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let got = store
            .get("job1", "outputs/a/b.txt")
            .await
            .unwrap()
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], b"hello");
        store.delete_job("job1").await.unwrap();
        assert!(
            store
                .get("job1", "outputs/a/b.txt")
                .await
                .unwrap()
                .is_none()
        );
        assert!(!dir.path().join("job1").exists());
    }
}
