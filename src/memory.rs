//! Giving freed memory back to the system. glibc's allocator keeps what a burst of jobs freed
//! in its arenas (one per thread that allocated), so a service that ran a thousand jobs stayed
//! at several times its starting size while doing nothing. `malloc_trim` returns those free
//! pages; the engine calls it when it falls idle, and the arenas are few to begin with.

/// Caps glibc's arenas (by default eight per core, one taken by each thread that allocates at
/// the wrong moment): the service's threads share a few, so what one job's threads freed is
/// reused by the next instead of sitting in an arena of its own. Call before any thread starts.
pub fn share_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Returns the allocator's free memory to the system (glibc only; elsewhere nothing to do).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
