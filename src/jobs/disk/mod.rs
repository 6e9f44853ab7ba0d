//! The job's disk: what the algorithm may write (`/data/outputs`, `/data/logs`) lives on a
//! filesystem of its own, an ext4 image of a fixed size mounted on a loop device in the
//! job's folder. A job that writes too much gets "no space left" from the kernel while it
//! runs, instead of filling the disk that holds the store and every other job; after the run
//! the engine sees the full disk and ends the job with that reason. Inodes are bounded the
//! same way, so a tree of a million empty files cannot exhaust the host either.
//!
//! It needs root (mount) and loop devices. Without them (`limits.disk = "auto"`), the writable
//! folders are plain folders and the caps are only checked when the run ends; the service
//! says so at start-up. `limits.disk = "quota"` refuses to start without them.

use std::path::Path;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use std::process::Command;

mod blank;
mod loopdev;

/// How the job's writable folders are bounded while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    /// A size-limited filesystem when this host allows it (root, loop devices), plain
    /// folders otherwise.
    #[default]
    Auto,
    /// Always a size-limited filesystem; the service does not start without one.
    Quota,
    /// Plain folders: the caps are checked after the run only.
    Off,
}

/// Whether this host can give each job a filesystem of its own, and if not, why.
pub fn can_quota() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("the service does not run as root (mounting needs it)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("this host has no loop devices (/dev/loop-control)".into());
    }
    // mkfs.ext4 makes each size's blank disk once; attaching and mounting are system calls.
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("mkfs.ext4").is_file())
    });
    if !found {
        return Err("mkfs.ext4 is not installed (Debian: e2fsprogs)".into());
    }
    Ok(())
}

/// A job's disk: what the caps let it hold, and the size of the filesystem that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub content: u64,
    pub size: u64,
}

impl Quota {
    /// ext4's own blocks (inode tables, bitmaps) and what it keeps back for writes in flight
    /// come on top of the content, so that a job under its caps never sees "no space left".
    pub fn holding(content: u64) -> Self {
        Self {
            content,
            size: content + content / 8 + (4 << 20),
        }
    }
}

/// Makes a `bytes`-sized filesystem in the file `image`, a copy of the blank of that size in
/// `blanks`, and mounts it on `dir`, which must exist and be empty.
pub async fn mount(image: &Path, dir: &Path, bytes: u64, blanks: &Path) -> std::io::Result<()> {
    let (image, dir, blanks) = (image.to_owned(), dir.to_owned(), blanks.to_owned());
    tokio::task::spawn_blocking(move || attach(&blanks, &image, &dir, bytes)).await?
}

/// What [`mount`] does, in the calling thread (blocking): the blank of `bytes` in `blanks`
/// (made once per size), its sparse copy into `image` (it takes what is written), and the
/// mount of that on `dir`.
pub fn attach(blanks: &Path, image: &Path, dir: &Path, bytes: u64) -> std::io::Result<()> {
    blank::copy_sparse(&blank::blank(blanks, bytes)?, image, bytes)?;
    match loopdev::mount(image, dir) {
        Err(e) if loopdev::unsupported(&e) => {
            // A kernel before 5.8: mount(8) knows the older way to attach.
            run(Command::new("mount")
                .args(["-o", "loop,nosuid,nodev,noexec"])
                .arg(image)
                .arg(dir))
        }
        other => other.map_err(|e| {
            std::io::Error::new(e.kind(), format!("mounting the job's disk on {dir:?}: {e}"))
        }),
    }
}

/// Unmounts the disk on `dir`, if one is mounted there (blocking). A disk still in use (a
/// container that has not gone yet) is detached lazily: it goes when the last user does.
pub fn unmount(dir: &Path) -> std::io::Result<()> {
    if !is_mounted(dir) {
        return Ok(());
    }
    loopdev::unmount(dir, false).or_else(|_| loopdev::unmount(dir, true))
}

/// Detaches (lazily) every filesystem mounted under `root`: for a data folder about to be
/// deleted while job disks may still be mounted in it (removing the folder would not detach
/// them, and each would keep a loop device).
pub fn detach_all_under(root: &Path) {
    let root = root.to_string_lossy();
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    for target in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
        if target.starts_with(root.as_ref()) {
            let _ = loopdev::unmount(Path::new(target), true);
        }
    }
}

/// Whether a filesystem of its own is mounted on `dir` (its device differs from its parent's).
pub fn is_mounted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(here), Some(Ok(parent))) =
        (std::fs::metadata(dir), dir.parent().map(std::fs::metadata))
    else {
        return false;
    };
    here.dev() != parent.dev()
}

/// Whether the job filled the disk on `dir`: it holds more than the caps allow (the kernel
/// refuses writes a little before the filesystem's last block, so "no space left" is judged
/// by what was written), or it ran out of inodes.
pub fn is_full(dir: &Path, quota: Quota) -> bool {
    if !is_mounted(dir) {
        return false;
    }
    match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let used = s
                .f_blocks
                .saturating_sub(s.f_bfree)
                .saturating_mul(s.f_frsize);
            used >= quota.content || s.f_favail == 0
        }
        Err(_) => false,
    }
}

/// Runs a program to its end (blocking); its error output is the error's text.
fn run(command: &mut Command) -> std::io::Result<()> {
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{:?} failed ({}): {}",
        command.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_disk_holds_its_size_and_no_more() {
        if let Err(why) = can_quota() {
            eprintln!("skipped: {why}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (image, mnt) = (dir.path().join("disk.img"), dir.path().join("disk"));
        std::fs::create_dir(&mnt).unwrap();
        // A failed assertion must not leave the mount behind.
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                if is_mounted(&self.0) {
                    let _ = std::process::Command::new("umount")
                        .arg("-l")
                        .arg(&self.0)
                        .status();
                }
            }
        }
        let _guard = Unmount(mnt.clone());
        let quota = Quota::holding(8 << 20);
        mount(&image, &mnt, quota.size, &dir.path().join("blanks"))
            .await
            .unwrap();
        assert!(is_mounted(&mnt));
        // What the caps allow fits, in one file or in many.
        std::fs::write(mnt.join("a"), vec![1u8; 6 << 20]).unwrap();
        for i in 0..100 {
            std::fs::write(mnt.join(format!("small{i}")), vec![1u8; 20 << 10]).unwrap();
        }
        assert!(!is_full(&mnt, quota));
        // Beyond the disk, the kernel says no, and the disk reads as full.
        let err = std::fs::write(mnt.join("b"), vec![1u8; 16 << 20]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "{err}"); // ENOSPC
        assert!(is_full(&mnt, quota));
        // Inodes are bounded too.
        std::fs::remove_file(mnt.join("b")).unwrap();
        let made = (0..1_000_000)
            .take_while(|i| std::fs::write(mnt.join(format!("e{i}")), b"").is_ok())
            .count();
        assert!(made < 100_000, "{made} files");
        assert!(is_full(&mnt, quota));
        unmount(&mnt).unwrap();
        assert!(!is_mounted(&mnt));
        unmount(&mnt).unwrap();
    }
}
