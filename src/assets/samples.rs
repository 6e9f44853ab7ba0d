//! Datasets' public samples: small files the publisher uploads beside a dataset (its DDO
//! declares them with their sha256), served to anyone so that a data scientist can try an
//! algorithm before buying (`brizo consumer try`). They are never derived from the real files:
//! only what the publisher uploaded is served.

use std::path::{Path, PathBuf};

use super::AssetError;

pub struct SampleStore {
    dir: PathBuf,
}

impl SampleStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("samples"),
        }
    }

    /// Where a sample file lies; the DID and the name are checked, never joined raw.
    pub fn path(&self, did: &str, name: &str) -> Result<PathBuf, AssetError> {
        let id = super::did::parse(did)
            .ok_or_else(|| AssetError::Invalid(format!("{did} is not a did:op DID")))?;
        if !valid_name(name) {
            return Err(AssetError::Invalid(format!(
                "sample name {name:?}: use letters, digits and . _ - only"
            )));
        }
        Ok(self.dir.join(hex::encode(id)).join(name))
    }

    /// Stores a sample file (replacing one of the same name), written whole or not at all.
    pub async fn put(&self, did: &str, name: &str, bytes: &[u8]) -> Result<(), AssetError> {
        let path = self.path(did, name)?;
        let io = |e: std::io::Error| AssetError::Invalid(format!("storing the sample: {e}"));
        tokio::fs::create_dir_all(path.parent().expect("under the DID's folder"))
            .await
            .map_err(io)?;
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, bytes).await.map_err(io)?;
        tokio::fs::rename(&partial, &path).await.map_err(io)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_cannot_leave_the_samples_folder() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "x y"] {
            assert!(!super::valid_name(bad), "{bad:?}");
        }
        assert!(super::valid_name("values.sample.csv"));
    }
}
