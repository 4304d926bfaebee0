//! Giving freed heap memory back to the system.
//!
//! glibc keeps freed chunks inside its arenas (one per thread that
//! allocated, so a rank with many threads holds many), and memory freed in
//! the middle of an arena stays resident. Between iterations every rank
//! hands whole free pages back with `malloc_trim(0)`, so node memory is
//! what is in use, not what each arena once held — whatever the ranks ×
//! threads split.

/// Make glibc give memory back as soon as it is freed: no trim threshold
/// and no top padding (a heap top that becomes free is released at once),
/// and blocks of 128 KiB or more in their own mappings (unmapped on free)
/// instead of glibc's default threshold, which grows with every large block
/// freed until such blocks stay in the arenas. Measured on the 40-hydro case
/// (16 iterations × 64 passes, summed PSS at the end): 16 ranks × 1 thread
/// 176.7 → 133.4 MB, 1 × 16 151.8 → 121.5 MB; a 64 KiB threshold saves no
/// more and costs twice the system time, 1 MiB saves almost nothing. Worth
/// it for small LPs only: upstream studies, whose stage LPs are larger,
/// train 23 % slower with it (40-hydro study, 64 iterations × 32 passes,
/// 1 rank × 2 threads: 694 s against 535 s) for 9 % less memory (138 against
/// 151 MB). Call once per process before training (glibc; elsewhere a
/// no-op).
pub fn release_eagerly() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc allocator parameters (integers); it
    // reads or writes no memory of the program.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 0);
        libc::mallopt(libc::M_TOP_PAD, 0);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Return free heap pages of every arena to the system (glibc; elsewhere a
/// no-op).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks and
    // releases free pages; it touches no memory the program owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Heap bytes glibc holds free in all its arenas (0 elsewhere).
#[must_use]
pub fn free_heap_bytes() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallinfo2 only reads glibc's own arena statistics under their
    // locks and returns them by value; it touches no memory the program owns.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let free = 0;
    free
}

/// [`trim`] when more than `over` bytes lie free in the arenas: the check
/// costs far less than the trim's system calls, so it can run often.
pub fn trim_over(over: usize) {
    if free_heap_bytes() > over {
        trim();
    }
}
