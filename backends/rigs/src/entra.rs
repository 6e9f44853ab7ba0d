//! A STAND-IN for Microsoft Entra ID as a Batch client meets it, for tests and `make try-azure`:
//! test code, not Entra. It issues opaque tokens, keeps them in this process's registry (one
//! test tenant for every stand-in of the process) with their audience and expiry, and the Batch
//! stand-in accepts exactly those, for Batch's audience, until they expire.
//!
//! Tokens come the ways real credentials ask for them, so the backend drives azure_identity's
//! own credentials, unchanged:
//! - the managed identity endpoint of App Service / Container Apps ([`managed_identity`]): what
//!   `ManagedIdentityCredential` asks when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set
//!   (API version 2019-08-01: `GET ?api-version&resource[&client_id]` with `X-IDENTITY-HEADER`,
//!   answered with `access_token`, `expires_on` as a string of Unix seconds, `resource`,
//!   `token_type`). Plain HTTP on 127.0.0.1, as on App Service; the service-principal and
//!   workload-identity credentials insist on an https authority, so they are not driven here;
//! - a stand-in `az` ([`write_az`]): what `AzureCliCredential` runs
//!   (`az account get-access-token -o json --scope SCOPE`), printing what Azure CLI 2.54+ prints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpResponse;
use serde_json::json;

/// The secret App Service puts in `IDENTITY_HEADER`; the endpoint refuses requests without it.
pub const IDENTITY_HEADER: &str = "brizo-standin-identity-header-not-a-secret";
/// The path of the managed identity endpoint on the Batch stand-in's server.
pub const IDENTITY_PATH: &str = "/msi/token";
/// The managed identity API version of App Service that azure_identity speaks.
pub const IDENTITY_API_VERSION: &str = "2019-08-01";
/// Batch's resource (the token audience), with its slash.
pub const BATCH_RESOURCE: &str = "https://batch.core.windows.net/";

struct Issued {
    resource: String,
    expires: u64,
}

fn issued() -> &'static Mutex<HashMap<String, Issued>> {
    static ISSUED: std::sync::OnceLock<Mutex<HashMap<String, Issued>>> = std::sync::OnceLock::new();
    ISSUED.get_or_init(|| Mutex::new(HashMap::new()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A new token for `resource`, valid for `lifetime`: the token and its expiry (Unix seconds).
pub fn issue(resource: &str, lifetime: Duration) -> (String, u64) {
    let mut map = issued().lock().unwrap();
    let token = format!(
        "standin-entra-{}-{}-{}",
        std::process::id(),
        map.len() + 1,
        crate::free_port()
    );
    let expires = unix_now() + lifetime.as_secs();
    map.insert(
        token.clone(),
        Issued {
            resource: resource.to_string(),
            expires,
        },
    );
    (token, expires)
}

/// Whether `token` is one this tenant issued for `resource` and has not expired; why not.
pub fn check(token: &str, resource: &str) -> Result<(), String> {
    let map = issued().lock().unwrap();
    let Some(t) = map.get(token) else {
        return Err("The access token is not one this tenant issued.".into());
    };
    if t.resource != resource {
        return Err(format!(
            "The access token has been obtained from wrong audience or resource '{}'. It should exactly match (including forward slash) with one of the allowed audiences '{resource}'",
            t.resource
        ));
    }
    if t.expires <= unix_now() {
        return Err("The access token expiry UTC time is earlier than current UTC time.".into());
    }
    Ok(())
}

/// The managed identity endpoint's answer to a request with `query` and `X-IDENTITY-HEADER`.
pub fn managed_identity(
    query: &[(String, String)],
    header: Option<&str>,
    lifetime: Duration,
) -> HttpResponse {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if header != Some(IDENTITY_HEADER) {
        return HttpResponse::Unauthorized().json(json!({"statusCode": 401,
            "message": "X-IDENTITY-HEADER is missing or is not this environment's IDENTITY_HEADER"}));
    }
    if get("api-version") != Some(IDENTITY_API_VERSION) {
        return HttpResponse::BadRequest().json(json!({"statusCode": 400,
            "message": format!("api-version must be {IDENTITY_API_VERSION}")}));
    }
    let Some(resource) = get("resource") else {
        return HttpResponse::BadRequest()
            .json(json!({"statusCode": 400, "message": "resource is required"}));
    };
    let (token, expires) = issue(resource, lifetime);
    let mut body = json!({
        "access_token": token,
        "expires_on": expires.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    if let Some(id) = get("client_id") {
        body["client_id"] = id.into();
    }
    HttpResponse::Ok().json(body)
}

/// Writes `dir/az`, a stand-in Azure CLI whose `az account get-access-token -o json --scope
/// SCOPE` prints `token` as Azure CLI 2.54+ does (and which refuses anything else), and returns
/// its path. Put `dir` first on PATH.
pub fn write_az(dir: &Path, token: &str, expires: u64) -> std::io::Result<PathBuf> {
    let path = dir.join("az");
    let script = format!(
        r#"#!/bin/sh
# A stand-in Azure CLI (brizo_test_rigs::entra): only `account get-access-token`.
[ "$1 $2" = "account get-access-token" ] || {{ echo "ERROR: the stand-in az only gets access tokens" >&2; exit 2; }}
case " $* " in *" --scope {scope} "*) ;; *) echo "ERROR: no --scope {scope} in: $*" >&2; exit 2;; esac
cat <<EOF
{{
  "accessToken": "{token}",
  "expiresOn": "{expires_on}",
  "expires_on": {expires},
  "subscription": "00000000-0000-0000-0000-000000000000",
  "tenant": "00000000-0000-0000-0000-000000000000",
  "tokenType": "Bearer"
}}
EOF
"#,
        scope = format!("{BATCH_RESOURCE}/.default"),
        // Azure CLI prints the local time; this machine's tests run in UTC.
        expires_on = crate::azure_batch::rfc3339(expires)
            .replace('T', " ")
            .replace('Z', ".000000"),
    );
    std::fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}
