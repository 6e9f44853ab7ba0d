//! Blank job disks: `mkfs.ext4` runs once per disk size, into `<data>/disks`, and each job's
//! disk is a copy of that blank. An empty ext4 image is almost all holes: the copy writes
//! only its metadata (a few hundred kilobytes for the default size), found with
//! `SEEK_DATA`/`SEEK_HOLE`, and leaves the rest sparse, as mkfs does. That is a handful of
//! system calls where mkfs was a process to start and a filesystem to lay out for every job.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::SeekFrom;
use std::process::Command;

/// Bumped whenever the mkfs options below change, so that blanks made by an older build are
/// not used.
const FORMAT: &str = "ext4-v1";

/// The blank of `bytes` in `blanks`, made now if there is none yet (blocking: mkfs runs
/// once per size).
pub fn blank(blanks: &Path, bytes: u64) -> io::Result<PathBuf> {
    let path = blanks.join(format!("{FORMAT}-{bytes}.img"));
    if path.try_exists()? {
        return Ok(path);
    }
    std::fs::create_dir_all(blanks)?;
    // Made under a name of its own and renamed into place: two jobs that make it at once
    // each rename a whole blank, and a crash leaves no half-made one under the real name.
    let partial = blanks.join(format!(
        ".{FORMAT}-{bytes}.{}.{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    File::create(&partial)?.set_len(bytes)?;
    // No journal (a job's scratch needs no crash safety), no blocks reserved for root.
    let made = super::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-O", "^has_journal"])
            .arg(&partial),
    );
    if let Err(e) = made {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Copies the data of `from` into a new file `to` of `len` bytes, keeping the holes.
pub fn copy_sparse(from: &Path, to: &Path, len: u64) -> io::Result<()> {
    let src = File::open(from)?;
    let dst = File::create(to)?;
    dst.set_len(len)?;
    let mut at = 0;
    loop {
        let data = match rustix::fs::seek(&src, SeekFrom::Data(at)) {
            Ok(offset) => offset,
            // No data after `at`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let hole = rustix::fs::seek(&src, SeekFrom::Hole(data))?;
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            let left = (hole - off_in) as usize;
            let n = rustix::fs::copy_file_range(
                &src,
                Some(&mut off_in),
                &dst,
                Some(&mut off_out),
                left,
            )?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "{from:?} ended while being copied"
                )));
            }
        }
        at = hole;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy has the blank's bytes, its size and its holes.
    #[tokio::test]
    async fn a_copy_is_the_blank_byte_for_byte_and_stays_sparse() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        // Data at the start, in the middle and at the end, holes between.
        let len: u64 = 64 << 20;
        let file = File::create(&from).unwrap();
        file.set_len(len).unwrap();
        for (offset, byte) in [(0u64, 1u8), (20 << 20, 2), (len - 4096, 3)] {
            rustix::io::pwrite(&file, &[byte; 4096], offset).unwrap();
        }
        drop(file);
        let to = dir.path().join("to");
        copy_sparse(&from, &to, len).unwrap();
        assert_eq!(std::fs::read(&from).unwrap(), std::fs::read(&to).unwrap());
        let meta = std::fs::metadata(&to).unwrap();
        assert_eq!(meta.len(), len);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "{} bytes allocated",
            meta.blocks() * 512
        );
    }
}
