//! Giving the heap a reconcile freed back to the kernel.
//!
//! A reconcile allocates megabytes for a moment and frees them again: the
//! pages of kube-proxy's pods, the plan read from the cache and its new
//! status (a line of progress per node), the status apply body and the
//! API server's answer. glibc's malloc keeps what is freed in the middle of
//! each arena (one per worker thread that allocated), so the resident set
//! ratchets up to a multiple of what is live. `malloc_trim(0)` returns the
//! free pages of every arena. The measurements (`make bench-operator`) are in
//! `BENCHMARKS.md`, "Operator at scale (simulated nodes)".

/// Returns the heap's free pages to the kernel (glibc only; elsewhere a no-op).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers; it walks glibc's own arenas
    // under their locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
