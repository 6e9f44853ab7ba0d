//! Reading the parts of an Ocean DDO brizo acts on. DDOs in the wild vary, so they stay JSON
//! and these accessors say precisely what is missing.

use alloy::primitives::U256;
use serde_json::Value;

use super::AssetError;

fn invalid(m: impl Into<String>) -> AssetError {
    AssetError::Invalid(m.into())
}

pub fn service<'a>(ddo: &'a Value, kind: &str) -> Option<&'a Value> {
    ddo.get("service")?
        .as_array()?
        .iter()
        .find(|s| s.get("type").and_then(Value::as_str) == Some(kind))
}

/// `attributes.main` of the metadata service (or of the DDO's only service).
pub fn main(ddo: &Value) -> Option<&Value> {
    service(ddo, "metadata").and_then(|s| s.pointer("/attributes/main"))
}

/// What the dataset's compute service allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputePolicy {
    pub price: U256,
    pub timeout_secs: u64,
    pub allow_raw_algorithm: bool,
    /// Algorithm DIDs allowed; empty: any published algorithm.
    pub trusted_algorithms: Vec<String>,
    pub allow_network_access: bool,
    /// `privacy.requiresApproval`: each job waits for the publisher's approval.
    pub requires_approval: bool,
    /// `image:tag` pairs; empty: any image the publisher's engine has.
    pub supported_containers: Vec<String>,
}

pub fn compute_policy(ddo: &Value) -> Result<ComputePolicy, AssetError> {
    let main = service(ddo, "compute")
        .and_then(|s| s.pointer("/attributes/main"))
        .ok_or_else(|| invalid("the dataset has no compute service"))?;
    let price = match main.get("price") {
        Some(Value::String(s)) => s
            .parse::<U256>()
            .map_err(|_| invalid(format!("compute price {s:?} is not a number")))?,
        Some(Value::Number(n)) => n
            .as_u64()
            .map(U256::from)
            .ok_or_else(|| invalid("compute price is not a whole number"))?,
        _ => return Err(invalid("the compute service has no price")),
    };
    let privacy = main.get("privacy").cloned().unwrap_or(Value::Null);
    let containers = main
        .pointer("/provider/environment/supportedContainers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    Some(format!(
                        "{}:{}",
                        c.get("image")?.as_str()?,
                        c.get("tag").and_then(Value::as_str).unwrap_or("latest")
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ComputePolicy {
        price,
        timeout_secs: main.get("timeout").and_then(Value::as_u64).unwrap_or(0),
        // Secure defaults: raw code and network only when the publisher said so.
        allow_raw_algorithm: privacy
            .get("allowRawAlgorithm")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        trusted_algorithms: privacy
            .get("trustedAlgorithms")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.to_lowercase())
                    .collect()
            })
            .unwrap_or_default(),
        allow_network_access: privacy
            .get("allowNetworkAccess")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        requires_approval: privacy
            .get("requiresApproval")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        supported_containers: containers,
    })
}

/// How an algorithm asset runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AlgorithmInfo {
    pub image: String,
    pub tag: String,
    pub entrypoint: String,
}

pub fn algorithm_info(ddo: &Value) -> Result<AlgorithmInfo, AssetError> {
    let main = main(ddo).ok_or_else(|| invalid("the algorithm DDO has no metadata service"))?;
    if main.get("type").and_then(Value::as_str) != Some("algorithm") {
        return Err(invalid(
            "the DDO is not an algorithm (attributes.main.type)",
        ));
    }
    container_info(
        main.pointer("/algorithm/container")
            .ok_or_else(|| invalid("the algorithm has no container"))?,
    )
}

/// `container {entrypoint, image, tag}` as in `algorithmMeta` and algorithm DDOs.
pub fn container_info(container: &Value) -> Result<AlgorithmInfo, AssetError> {
    let field = |name: &str| {
        container
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(AlgorithmInfo {
        image: field("image").ok_or_else(|| invalid("container.image is missing"))?,
        tag: field("tag").unwrap_or_else(|| "latest".into()),
        entrypoint: field("entrypoint")
            .ok_or_else(|| invalid("container.entrypoint is missing"))?,
    })
}

/// The encrypted file list (hex), where Ocean DDOs keep it.
pub fn encrypted_files(ddo: &Value) -> Option<&str> {
    service(ddo, "metadata")
        .and_then(|s| s.pointer("/attributes/encryptedFiles"))
        .or_else(|| ddo.get("encryptedFiles"))
        .and_then(Value::as_str)
}

/// File URLs from a decrypted files list (`[{"url": ...}, ...]`), in index order.
pub fn file_urls(decrypted: &[u8]) -> Result<Vec<String>, AssetError> {
    let files: Value = serde_json::from_slice(decrypted)
        .map_err(|e| invalid(format!("decrypted files are not JSON: {e}")))?;
    let mut list: Vec<(u64, String)> = files
        .as_array()
        .ok_or_else(|| invalid("decrypted files are not a list"))?
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let url = f
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("file {i} has no url")))?;
            Ok((
                f.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                url.to_string(),
            ))
        })
        .collect::<Result<_, AssetError>>()?;
    list.sort_by_key(|(i, _)| *i);
    Ok(list.into_iter().map(|(_, url)| url).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policy_defaults_are_restrictive() {
        let ddo = json!({"service": [{"type": "compute", "attributes": {"main": {"price": "10", "timeout": 60}}}]});
        let p = compute_policy(&ddo).unwrap();
        assert_eq!(p.price, U256::from(10));
        assert!(!p.allow_raw_algorithm && !p.allow_network_access);
        assert!(p.trusted_algorithms.is_empty() && p.supported_containers.is_empty());
        assert!(compute_policy(&json!({"service": []})).is_err());
    }

    #[test]
    fn policy_reads_privacy_and_containers() {
        let ddo = json!({"service": [{"type": "compute", "attributes": {"main": {"price": 5,
            "privacy": {"allowRawAlgorithm": true, "trustedAlgorithms": ["did:op:AA"], "allowNetworkAccess": true},
            "provider": {"environment": {"supportedContainers": [{"image": "python", "tag": "3.11"}, {"image": "r"}]}}}}}]});
        let p = compute_policy(&ddo).unwrap();
        assert!(p.allow_raw_algorithm && p.allow_network_access);
        assert_eq!(p.trusted_algorithms, vec!["did:op:aa"]);
        assert_eq!(p.supported_containers, vec!["python:3.11", "r:latest"]);
    }

    #[test]
    fn files_come_in_index_order() {
        let urls = file_urls(br#"[{"index": 1, "url": "b"}, {"index": 0, "url": "a"}]"#).unwrap();
        assert_eq!(urls, vec!["a", "b"]);
        assert!(file_urls(br#"[{"index": 0}]"#).is_err());
    }
}
