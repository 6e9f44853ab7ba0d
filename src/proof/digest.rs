//! Content digests for receipts: sha256 of a file's bytes; for a folder, sha256 of its
//! listing, one line per regular file in byte order of the relative path:
//! `<relative path>\0<size>\0<sha256 hex>\n` (symlinks are not followed, nor listed).

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Digest {
    pub size: u64,
    pub sha256: String,
}

pub fn file(path: &Path) -> std::io::Result<Digest> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Digest {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

pub fn path(p: &Path) -> std::io::Result<Digest> {
    if !p.is_dir() {
        return file(p);
    }
    let mut entries = vec![];
    for entry in walkdir::WalkDir::new(p).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(p)
                .expect("under the root")
                .to_string_lossy()
                .into_owned();
            entries.push((rel, file(entry.path())?));
        }
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut hasher = Sha256::new();
    let mut size = 0;
    for (rel, d) in &entries {
        hasher.update(format!("{rel}\0{}\0{}\n", d.size, d.sha256).as_bytes());
        size += d.size;
    }
    Ok(Digest {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// `path`, off the async runtime (datasets can be large).
pub async fn path_async(p: std::path::PathBuf) -> std::io::Result<Digest> {
    tokio::task::spawn_blocking(move || path(&p))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"hello").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), b"!").unwrap();
        let a = file(&dir.path().join("a")).unwrap();
        assert_eq!(
            a,
            Digest {
                size: 5,
                sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into()
            }
        );
        let whole = path(dir.path()).unwrap();
        assert_eq!(whole.size, 6);
        let b = file(&dir.path().join("sub/b")).unwrap();
        let listing = format!(
            "a\0{}\0{}\nsub/b\0{}\0{}\n",
            a.size, a.sha256, b.size, b.sha256
        );
        assert_eq!(
            whole.sha256,
            hex::encode(Sha256::digest(listing.as_bytes()))
        );
        std::fs::write(dir.path().join("sub/b"), b"?").unwrap();
        assert_ne!(
            path(dir.path()).unwrap().sha256,
            whole.sha256,
            "a changed byte changes the digest"
        );
    }
}
