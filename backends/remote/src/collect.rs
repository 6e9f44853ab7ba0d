//! Bringing back what a run wrote: each writable folder came back as one tar archive, made by
//! the job's container and so not trusted.

use std::path::{Path, PathBuf};

use brizo_backend_core::BackendError;

use crate::Staging;

/// Unpacks the writable folders the runner sent back into their host paths, streamed through
/// a file next to each (never whole in memory). A folder with no archive (the run was stopped
/// before it sent one) stays as it is.
pub(crate) async fn unpack_writable(
    staging: &dyn Staging,
    job_id: &str,
    writable: &[(usize, PathBuf)],
    output_bytes: u64,
) -> Result<(), BackendError> {
    // The runner refuses to send more than the cap; tar adds headers and padding.
    let ceiling = output_bytes.saturating_mul(2).saturating_add(64 << 20);
    for (n, dest) in writable {
        let archive = dest.with_file_name(format!(
            ".{}.brizo-{n}.tar",
            dest.file_name().and_then(|f| f.to_str()).unwrap_or("mount")
        ));
        match staging
            .download(job_id, &format!("out/{n}.tar"), &archive, ceiling)
            .await?
        {
            None => continue,
            Some(size) if size > ceiling => {
                tracing::warn!(job = %job_id, "the archive of {} is {size} bytes, far over the cap the runner enforces; not unpacked", dest.display());
                continue;
            }
            Some(_) => {}
        }
        let (file, into) = (archive.clone(), dest.clone());
        let unpacked = tokio::task::spawn_blocking(move || unpack(&file, &into))
            .await
            .expect("unpacking does not panic");
        let _ = tokio::fs::remove_file(&archive).await;
        unpacked.map_err(|e| {
            BackendError::run_failed(format!(
                "what the job returned in {} cannot be unpacked",
                dest.display()
            ))
            .because(e)
        })?;
    }
    Ok(())
}

/// Regular files and folders only, never outside `dest`.
fn unpack(archive: &Path, dest: &Path) -> std::io::Result<()> {
    let mut reader = tar::Archive::new(std::fs::File::open(archive)?);
    for entry in reader.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        // unpack_in refuses absolute paths and `..`.
        entry.unpack_in(dest)?;
    }
    // Modes from the archive are the job's choice: readable folders and files for the service.
    for entry in walkdir::WalkDir::new(dest).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let mode = if entry.file_type().is_dir() {
            0o755
        } else if entry.file_type().is_file() {
            0o644
        } else {
            continue;
        };
        std::fs::set_permissions(
            entry.path(),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_and_folders_come_out_of_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        {
            let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o600);
            b.append_data(&mut h, "ok/file.txt", &b"hi"[..]).unwrap();
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            b.append_link(&mut link, "evil", "/etc/passwd").unwrap();
            b.finish().unwrap();
        }
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        unpack(&archive, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("ok/file.txt")).unwrap(),
            "hi"
        );
        assert!(
            std::fs::symlink_metadata(dest.join("evil")).is_err(),
            "a symlink came out"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dest.join("ok/file.txt"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
    }
}
