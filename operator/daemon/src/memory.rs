//! Giving freed heap back to the kernel.
//!
//! Both binaries allocate megabytes for a moment and free them again: the
//! operator in a reconcile (the pages of kube-proxy's pods, the plan and its
//! new status, the status apply body and the API server's answer), the
//! agent in a full sync (every map operation and the whole target). glibc's
//! malloc keeps what is freed in the middle of each arena (one per thread
//! that allocated), so the resident set ratchets up to a multiple of what is
//! live. `malloc_trim(0)` returns the free pages of every arena. The
//! measurements are in `BENCHMARKS.md` ("Operator at scale (simulated
//! nodes)", "Programming time and agent memory").

/// Returns the heap's free pages to the kernel (glibc only; elsewhere a no-op).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers; it walks glibc's own arenas
    // under their locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
