//! Batch Shared Key: each request signed with the account's access key (HMAC-SHA256 over the
//! verb, the standard headers, the `ocp-*` headers and the resource), the scheme Microsoft's
//! Batch SDKs implement (`BatchSharedKeyAuth` in azure-batch for Python). The key gives full
//! control of the account, which is why Microsoft Entra ID ([`crate::entra`]) is the default.

use base64::Engine as _;
use brizo_backend_core::BackendError;
use hmac::Mac;

/// An account and its access key.
pub struct SharedKey {
    account: String,
    key: Vec<u8>,
}

impl SharedKey {
    /// `key` is the account's access key, base64 as the portal and Terraform show it.
    pub fn new(account: &str, key: &str) -> Result<Self, BackendError> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .map_err(|e| {
                BackendError::invalid_spec("the Batch access key is not base64").because(e)
            })?;
        Ok(Self {
            account: account.to_string(),
            key,
        })
    }

    /// The `Authorization` value for a request.
    pub fn authorization(
        &self,
        method: &str,
        url: &reqwest::Url,
        content_length: &str,
        content_type: &str,
        ocp_headers: &[(&str, &str)],
    ) -> String {
        let to_sign = string_to_sign(
            method,
            content_length,
            content_type,
            ocp_headers,
            &self.account,
            url.path(),
            &url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect::<Vec<_>>(),
        );
        format!("SharedKey {}:{}", self.account, sign(&self.key, &to_sign))
    }
}

/// The Batch Shared Key string to sign: the verb, eleven standard headers (only Content-Length
/// and Content-Type are ever sent here), the `ocp-*` headers sorted, then `/<account><path>`
/// and each query parameter as `\nname:value`, sorted by name.
pub fn string_to_sign(
    method: &str,
    content_length: &str,
    content_type: &str,
    ocp_headers: &[(&str, &str)],
    account: &str,
    path: &str,
    query: &[(String, String)],
) -> String {
    let mut s = format!("{method}\n\n\n{content_length}\n\n{content_type}\n\n\n\n\n\n\n");
    let mut ocp: Vec<(String, &str)> = ocp_headers
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    ocp.sort();
    for (k, v) in ocp {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push_str(&format!("/{account}{path}"));
    let mut query: Vec<&(String, String)> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
    query.sort();
    for (k, v) in query {
        s.push_str(&format!("\n{k}:{v}"));
    }
    s
}

/// base64(HMAC-SHA256(key, text)).
pub fn sign(key: &[u8], text: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::API_VERSION;

    const JSON_BODY: &str = "application/json; odata=minimalmetadata";

    #[test]
    fn the_string_to_sign_has_the_shared_key_layout() {
        let s = string_to_sign(
            "POST",
            "12",
            JSON_BODY,
            &[("ocp-date", "Tue, 01 Dec 2026 12:00:00 GMT")],
            "acct",
            "/jobs/j1/tasks",
            &[("api-version".into(), API_VERSION.into())],
        );
        assert_eq!(
            s,
            format!(
                "POST\n\n\n12\n\n{JSON_BODY}\n\n\n\n\n\n\nocp-date:Tue, 01 Dec 2026 12:00:00 GMT\n/acct/jobs/j1/tasks\napi-version:{API_VERSION}"
            )
        );
    }
}
