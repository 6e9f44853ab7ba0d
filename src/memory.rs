//! Giving freed memory back to the system. glibc's allocator keeps what a burst of jobs freed
//! in its arenas (one per thread that allocated), so a service that ran a thousand jobs stayed
//! at several times its starting size while doing nothing. `malloc_trim` returns those free
//! pages; the engine calls it when it falls idle.

/// Returns the allocator's free memory to the system (glibc only; elsewhere nothing to do).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
