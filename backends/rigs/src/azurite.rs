//! Azurite, the real Azure Blob emulator (npm; `scripts/test-deps.sh` installs it under
//! `.state/tools`), on a port of its own with an in-memory store, for the Azure backend's tests,
//! its benchmark and `make try-azure`. Stopped by PID when dropped, and by a watcher if the
//! test process dies first.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::Mac;

/// Azurite's well-known development account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    /// `None` for an Azurite this process did not start ([`Azurite::attach`]).
    child: Option<Child>,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Azurite {
    pub fn start(project_root: &Path, port: u16) -> Result<Azurite, String> {
        let bin = project_root.join(".state/tools/node_modules/.bin/azurite-blob");
        if !bin.exists() {
            return Err(format!(
                "{} is missing: install it with scripts/test-deps.sh",
                bin.display()
            ));
        }
        let script = format!(
            "'{bin}' --blobHost 127.0.0.1 --blobPort {port} --inMemoryPersistence --disableTelemetry \
             --skipApiVersionCheck --silent >/dev/null 2>&1 & a=$!; \
             trap 'kill $a 2>/dev/null; exit 0' TERM; \
             while kill -0 {parent} 2>/dev/null && kill -0 $a 2>/dev/null; do sleep 1; done; kill $a 2>/dev/null; wait $a",
            bin = bin.display(),
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting Azurite: {e}"))?;
        let azurite = Azurite {
            child: Some(child),
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("Azurite did not come up on {}", azurite.endpoint));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(azurite)
    }

    /// An Azurite already listening on `port` (started by a script); never stopped from here.
    pub fn attach(port: u16) -> Azurite {
        Azurite {
            child: None,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The account's blob endpoint, as the backend's `blob_endpoint` takes it.
    pub fn account_url(&self) -> String {
        format!("{}/{ACCOUNT}", self.endpoint)
    }

    /// Creates a container (Shared Key with the well-known key); not an error when it exists.
    pub fn create_container(&self, name: &str) -> Result<(), String> {
        let (status, body) =
            self.request("PUT", &format!("/{name}"), "restype=container", &[], b"")?;
        if status == 201 || status == 409 {
            Ok(())
        } else {
            Err(format!("creating container {name}: {status} {body}"))
        }
    }

    /// Uploads a block blob.
    pub fn put_blob(&self, container: &str, name: &str, data: &[u8]) -> Result<(), String> {
        let (status, body) = self.request(
            "PUT",
            &format!("/{container}/{name}"),
            "",
            &[("x-ms-blob-type", "BlockBlob")],
            data,
        )?;
        if status == 201 {
            Ok(())
        } else {
            Err(format!("putting {container}/{name}: {status} {body}"))
        }
    }

    /// Downloads a blob; `None` when it does not exist.
    pub fn get_blob(&self, container: &str, name: &str) -> Result<Option<Vec<u8>>, String> {
        let (status, body) = self.request("GET", &format!("/{container}/{name}"), "", &[], b"")?;
        match status {
            200 => Ok(Some(body.into_bytes())),
            404 => Ok(None),
            _ => Err(format!("getting {container}/{name}: {status} {body}")),
        }
    }

    /// Names of the blobs in a container (a plain listing, enough for tests).
    pub fn list_blobs(&self, container: &str) -> Result<Vec<String>, String> {
        let (status, body) = self.request(
            "GET",
            &format!("/{container}"),
            "comp=list&restype=container",
            &[],
            b"",
        )?;
        if status != 200 {
            return Err(format!("listing {container}: {status} {body}"));
        }
        Ok(body
            .split("<Name>")
            .skip(1)
            .filter_map(|s| s.split("</Name>").next())
            .map(str::to_string)
            .collect())
    }

    /// One Shared Key request over HTTP/1.1 (storage's string to sign).
    fn request(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, String), String> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut ms: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ms.push(("x-ms-date".into(), date));
        ms.push(("x-ms-version".into(), "2021-08-06".into()));
        ms.sort();
        let canonical: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let mut resource = format!("/{ACCOUNT}/{ACCOUNT}{path}");
        let mut pairs: Vec<(&str, &str)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .collect();
        pairs.sort();
        for (k, v) in pairs {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        let length = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let to_sign = format!("{method}\n\n\n{length}\n\n\n\n\n\n\n\n\n{canonical}{resource}");
        let key = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .expect("the key is base64");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let target = if query.is_empty() {
            format!("/{ACCOUNT}{path}")
        } else {
            format!("/{ACCOUNT}{path}?{query}")
        };
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\nAuthorization: SharedKey {ACCOUNT}:{signature}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in &ms {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .map_err(|e| format!("Azurite: {e}"))?;
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .map_err(|e| format!("Azurite: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(|e| format!("Azurite: {e}"))?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("Azurite answered {text:?}"))?;
        let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}
