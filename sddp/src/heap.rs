//! Giving freed heap memory back to the system.
//!
//! glibc keeps freed chunks inside its arenas (one per thread that
//! allocated, so a rank with many threads holds many), and memory freed in
//! the middle of an arena stays resident. Between iterations every rank
//! hands whole free pages back with `malloc_trim(0)`, so node memory is
//! what is in use, not what each arena once held — whatever the ranks ×
//! threads split.

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
