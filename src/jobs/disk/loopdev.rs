//! Attaching a file to a loop device and mounting it, with the kernel's calls instead of
//! `mount -o loop` and `umount`. Those two tools each parse every mount of the host
//! (/proc/self/mountinfo, long on a Docker host) and scan /sys for loop devices; for a job's
//! disk they cost more than the job's own container start. Here it is one `ioctl` for a free
//! device, one to attach the file, one `mount(2)`, and `umount2(2)` at the end.
//!
//! The loop crates on crates.io generate these bindings with bindgen at build time (libclang
//! on every build machine); the handful of constants and the one struct below are the
//! kernel's stable ABI (`linux/loop.h`), written out instead.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use rustix::mount::{MountFlags, UnmountFlags};

const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// The device lets go of its file when the last user (the mount) does: nothing to detach.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (Linux 5.8 and later): the file, and its settings, in one call.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Whether the kernel lacks `LOOP_CONFIGURE` (before 5.8): the caller falls back to the tools.
pub fn unsupported(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY))
}

/// Attaches `image` to a free loop device and mounts its ext4 filesystem on `dir`, without
/// setuid programs, device files or executables.
pub fn mount(image: &Path, dir: &Path) -> std::io::Result<()> {
    let (path, device) = attach(image)?;
    // With autoclear, the device lets go of the file when its last user closes it: ours
    // stays open until the mount holds the device too, then the unmount is what frees it
    // (and a failed mount frees it at once).
    let mounted = rustix::mount::mount(
        path.as_str(),
        dir,
        "ext4",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        // The copied blank's inode tables read as zeros (holes): the kernel need not write
        // zeros over them in the background, which would also fill the sparse file.
        c"noinit_itable",
    );
    drop(device);
    Ok(mounted?)
}

/// Unmounts `dir`; `lazy` detaches it now and lets it go when its last user does.
pub fn unmount(dir: &Path, lazy: bool) -> std::io::Result<()> {
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    rustix::mount::unmount(dir, flags)?;
    Ok(())
}

/// A loop device now backed by `image`: its path, and an open handle that keeps it attached.
/// Another process may take the free device between asking and attaching (EBUSY): then ask
/// again.
fn attach(image: &Path) -> std::io::Result<(String, std::fs::File)> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let file = OpenOptions::new().read(true).write(true).open(image)?;
    let mut last = None;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = format!("/dev/loop{number}");
        let device = OpenOptions::new().read(true).write(true).open(&path)?;
        let config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_flags: LO_FLAGS_AUTOCLEAR,
                ..LoopInfo64::zeroed()
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is, laid out
        // as the kernel's; the kernel keeps its own reference to the file.
        let done = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if done == 0 {
            return Ok((path, device));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
        last = Some(err);
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free loop device")))
}

impl LoopInfo64 {
    fn zeroed() -> Self {
        Self {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structs are the size `linux/loop.h` gives them (232 and 304 bytes on every
    /// architecture: only fixed-width fields).
    #[test]
    fn the_structs_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
