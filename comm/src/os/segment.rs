//! POSIX shared-memory segments: `shm_open`, `ftruncate`, `fallocate`,
//! `mmap`, `shm_unlink`, OFD byte locks for liveness, and bounds-checked
//! access to the mapped bytes.
//!
//! This module and [`super::futex`] hold every raw pointer of the crate that
//! points into shared memory. Access comes in three kinds, and the kind
//! decides who may write what:
//!
//! - **atomic words** ([`Segment::atomic_u32`], [`Segment::atomic_u64`], the
//!   header through [`Segment::read_header`] / [`Segment::write_header`]):
//!   any process may read or write them at any time;
//! - **published bytes** (`read_published`, crate-private): written once by
//!   one process before a Release store that every reader Acquires first,
//!   never written again;
//! - **staged bytes** (`copy_in`, `copy_out`, `ptr_at`, crate-private): the
//!   barrier protocol of [`crate::sync`] orders every write before every read
//!   of the same range.
//!
//! Offsets out of range or misaligned are crate bugs and panic.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;
use cobre_shm_layout::{SegmentHeader, HEADER_FIELDS, HEADER_STATE_OFFSET};
use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{fstat, Mode};

/// An OS call on a segment failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}({name}) failed: {errno}")]
pub struct OsError {
    /// The call that failed.
    pub op: &'static str,
    /// The segment name.
    pub name: String,
    /// The errno it returned.
    pub errno: Errno,
}

impl OsError {
    fn new(op: &'static str, name: &str, errno: Errno) -> Self {
        Self {
            op,
            name: name.to_string(),
            errno,
        }
    }
}

/// The memory behind a segment.
enum Backing {
    /// A `MAP_SHARED` mapping of a POSIX shared-memory object (unmapped on
    /// drop), with the open descriptor that holds this process's OFD locks.
    Mapped {
        fd: OwnedFd,
        #[allow(dead_code)]
        map: MmapRaw,
    },
    /// Zeroed, page-aligned heap memory shared by the threads of one process
    /// (tests under Miri, where `mmap` of a shm object is not available).
    #[cfg(test)]
    Heap(std::sync::Arc<heap::Buffer>),
}

/// A mapped POSIX shared-memory segment.
///
/// The mapping is `MAP_SHARED`, read-write, and covers the whole file as it
/// was when mapped. The file descriptor stays open for the life of the value:
/// OFD locks taken through it are released by the kernel when the process
/// dies, whatever the cause, which is how peers detect a dead rank.
pub struct Segment {
    backing: Backing,
    base: *mut u8,
    len: usize,
    name: String,
}

// SAFETY: `base` points into a mapping (or heap buffer) owned by `backing`
// and valid until drop; nothing about it is tied to a thread. Every access
// through `&Segment` is either atomic or ordered by the protocols described
// in the module documentation, which hold for threads as for processes.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Outcome of opening a segment that another process creates.
#[derive(Debug)]
pub enum Opened {
    /// No segment of that name exists (yet).
    Missing,
    /// The segment exists but is smaller than `min_len` (creator still sizing it).
    TooSmall,
    /// The segment belongs to another user or others may write it: not
    /// opened further, not modified.
    Foreign {
        /// Owner of the segment.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// Mapped.
    Ready(Segment),
}

/// Directory where POSIX shared-memory names live on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// The effective user id of this process.
#[must_use]
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Bytes available to an unprivileged user in `/dev/shm`, where segments
/// live (`None` when `statvfs` fails).
#[must_use]
pub fn shm_free_bytes() -> Option<u64> {
    nix::sys::statvfs::statvfs(SHM_DIR)
        .ok()
        .map(|vfs| available(&vfs))
}

/// Bytes an unprivileged user may still write on a filesystem.
fn available(vfs: &nix::sys::statvfs::Statvfs) -> u64 {
    vfs.blocks_available().saturating_mul(vfs.fragment_size())
}

impl Segment {
    /// Create `name` exclusively (`O_CREAT | O_EXCL`, mode 0600), size it to
    /// `len` bytes and map it. The new bytes are zero. No page is allocated
    /// yet: see [`Self::reserve`].
    ///
    /// # Errors
    /// `EEXIST` when the name is taken, or whatever `ftruncate`/`mmap` report;
    /// on a sizing or mapping failure the name is unlinked again.
    pub fn create_exclusive(name: &str, len: usize) -> Result<Self, OsError> {
        let fd = shm_open(
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| OsError::new("shm_open", name, e))?;
        let sized = i64::try_from(len)
            .map_err(|_| Errno::EFBIG)
            .and_then(|l| nix::unistd::ftruncate(&fd, l))
            .map_err(|e| OsError::new("ftruncate", name, e))
            .and_then(|()| Self::map(fd, name, len));
        if sized.is_err() {
            // We created the name a moment ago: nobody else owns it.
            let _ = shm_unlink(name);
        }
        sized
    }

    /// Open an existing segment read-write and map all of it, provided it is
    /// at least `min_len` bytes long, owned by this user and not accessible
    /// to group or others (what [`Self::create_exclusive`] makes).
    ///
    /// # Errors
    /// Any errno other than `ENOENT` from `shm_open`, or from `fstat`/`mmap`.
    pub fn open(name: &str, min_len: usize) -> Result<Opened, OsError> {
        // O_NOFOLLOW: /dev/shm is world-writable; never follow a planted link.
        let fd = match shm_open(
            name,
            OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Opened::Missing),
            Err(e) => return Err(OsError::new("shm_open", name, e)),
        };
        let st = fstat(&fd).map_err(|e| OsError::new("fstat", name, e))?;
        let mode = st.st_mode & 0o7777;
        if st.st_uid != euid() || mode & 0o077 != 0 {
            return Ok(Opened::Foreign {
                uid: st.st_uid,
                mode,
            });
        }
        let len = usize::try_from(st.st_size).unwrap_or(0);
        if len < min_len || len == 0 {
            return Ok(Opened::TooSmall);
        }
        Self::map(fd, name, len).map(Opened::Ready)
    }

    fn map(fd: OwnedFd, name: &str, len: usize) -> Result<Self, OsError> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&fd)
            .map_err(|e| OsError::new("mmap", name, io_errno(&e)))?;
        let base = map.as_mut_ptr();
        Ok(Self {
            backing: Backing::Mapped { fd, map },
            base,
            len,
            name: name.to_string(),
        })
    }

    /// Remove `name`; existing mappings stay valid. `ENOENT` is not an error.
    ///
    /// # Errors
    /// Any other errno from `shm_unlink`.
    pub fn unlink(name: &str) -> Result<(), OsError> {
        match shm_unlink(name) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(OsError::new("shm_unlink", name, e)),
        }
    }

    /// The segment's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mapped length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true for a mapped segment).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn fd(&self) -> Option<&OwnedFd> {
        match &self.backing {
            Backing::Mapped { fd, .. } => Some(fd),
            #[cfg(test)]
            Backing::Heap(_) => None,
        }
    }

    /// Allocate the pages of `[offset, offset + len)` now (`posix_fallocate`),
    /// so that a full `/dev/shm` is an `ENOSPC` error here instead of a
    /// `SIGBUS` at the first write. Pages are placed by the calling process's
    /// memory policy (or the segment's, see `mbind`), as a first touch would.
    ///
    /// # Errors
    /// `ENOSPC` when the filesystem is full, or any other errno.
    pub fn reserve(&self, offset: usize, len: usize) -> Result<(), OsError> {
        let Some(fd) = self.fd() else { return Ok(()) };
        self.check(offset, len, 1);
        if len == 0 {
            return Ok(());
        }
        let (o, l) = (
            i64::try_from(offset)
                .map_err(|_| OsError::new("fallocate", &self.name, Errno::EFBIG))?,
            i64::try_from(len).map_err(|_| OsError::new("fallocate", &self.name, Errno::EFBIG))?,
        );
        nix::fcntl::posix_fallocate(fd, o, l)
            .map_err(|e| OsError::new("posix_fallocate", &self.name, e))
    }

    /// Bytes available to an unprivileged user on the filesystem holding the
    /// segment (`/dev/shm`).
    ///
    /// # Errors
    /// From `fstatvfs`.
    pub fn free_bytes(&self) -> Result<u64, OsError> {
        let Some(fd) = self.fd() else {
            return Ok(u64::MAX);
        };
        let vfs =
            nix::sys::statvfs::fstatvfs(fd).map_err(|e| OsError::new("fstatvfs", &self.name, e))?;
        Ok(available(&vfs))
    }

    /// Base address of the mapping, for `mbind` and `move_pages` only.
    #[must_use]
    pub fn base_addr(&self) -> usize {
        self.base as usize
    }

    fn flock(byte: u64, lock_type: i32) -> libc::flock {
        // SAFETY: `libc::flock` is a plain C struct for which all-zero bytes
        // are a valid value (l_pid must be 0 for OFD locks).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = lock_type as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = i64::try_from(byte).unwrap_or(i64::MAX);
        fl.l_len = 1;
        fl
    }

    /// Take an exclusive OFD lock on `byte` (a lock slot, not data). Returns
    /// `false` if another open file description holds it.
    ///
    /// # Errors
    /// Any errno other than `EAGAIN`/`EACCES`.
    pub fn try_lock_byte(&self, byte: u64) -> Result<bool, OsError> {
        let Some(fd) = self.fd() else { return Ok(true) };
        let fl = Self::flock(byte, libc::F_WRLCK);
        match fcntl(fd, FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
            Err(e) => Err(OsError::new("fcntl(F_OFD_SETLK)", &self.name, e)),
        }
    }

    /// Whether some *other* open file description holds a lock on `byte`:
    /// `true` means the process holding it is alive.
    ///
    /// # Errors
    /// From `fcntl(F_OFD_GETLK)`.
    pub fn byte_locked_by_other(&self, byte: u64) -> Result<bool, OsError> {
        let Some(fd) = self.fd() else { return Ok(true) };
        let mut fl = Self::flock(byte, libc::F_WRLCK);
        fcntl(fd, FcntlArg::F_OFD_GETLK(&mut fl))
            .map_err(|e| OsError::new("fcntl(F_OFD_GETLK)", &self.name, e))?;
        Ok(i32::from(fl.l_type) != libc::F_UNLCK)
    }

    fn check(&self, offset: usize, len: usize, align: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len) && offset % align == 0,
            "cobre-shm bug: access [{offset}, +{len}) align {align} outside segment {} of {} bytes",
            self.name,
            self.len
        );
    }

    /// The 32-bit atomic word at `offset`.
    ///
    /// # Panics
    /// If `offset` is out of range or not 4-aligned (a crate bug).
    #[must_use]
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: `check` proved the 4 bytes lie inside the mapping and are
        // 4-aligned (the mapping is page-aligned). The mapping lives as long
        // as `&self`. `AtomicU32` has the layout of `u32`, and every process
        // accesses words at atomic offsets only through atomics.
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    /// The 64-bit atomic word at `offset`.
    ///
    /// # Panics
    /// If `offset` is out of range or not 8-aligned (a crate bug).
    #[must_use]
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: as in `atomic_u32`, for 8 bytes 8-aligned.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast()) }
    }

    /// The segment header, field by field through atomics: `state` first with
    /// Acquire, so that when it reads [`cobre_shm_layout::STATE_READY`] every
    /// other field holds what the creator wrote before publishing it. Before
    /// that, fields may still be zero (never torn: each is one atomic word).
    #[must_use]
    pub fn read_header(&self) -> SegmentHeader {
        let mut bytes = [0u8; size_of::<SegmentHeader>()];
        let state = self.atomic_u32(HEADER_STATE_OFFSET).load(Ordering::Acquire);
        for (offset, width) in HEADER_FIELDS {
            let field = &mut bytes[offset..offset + width];
            if offset == HEADER_STATE_OFFSET {
                field.copy_from_slice(&state.to_ne_bytes());
            } else if width == 8 {
                let v = self.atomic_u64(offset).load(Ordering::Relaxed);
                field.copy_from_slice(&v.to_ne_bytes());
            } else {
                let v = self.atomic_u32(offset).load(Ordering::Relaxed);
                field.copy_from_slice(&v.to_ne_bytes());
            }
        }
        bytemuck::pod_read_unaligned(&bytes)
    }

    /// Write every header field but `state` through atomics (Relaxed); the
    /// creator then publishes the header by storing `state` with Release.
    pub fn write_header(&self, header: &SegmentHeader) {
        let bytes = bytemuck::bytes_of(header);
        for (offset, width) in HEADER_FIELDS {
            if offset == HEADER_STATE_OFFSET {
                continue;
            }
            let field = &bytes[offset..offset + width];
            if width == 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(field);
                self.atomic_u64(offset)
                    .store(u64::from_ne_bytes(b), Ordering::Relaxed);
            } else {
                let mut b = [0u8; 4];
                b.copy_from_slice(field);
                self.atomic_u32(offset)
                    .store(u32::from_ne_bytes(b), Ordering::Relaxed);
            }
        }
    }

    /// Copy out a `Pod` value that was *published*: written by one process
    /// before a Release store that the caller has Acquired, and never
    /// written again (job parameters, region descriptions, the abort record).
    ///
    /// # Panics
    /// If the range is outside the mapping (a crate bug).
    #[must_use]
    pub(crate) fn read_published<T: Pod>(&self, offset: usize) -> T {
        self.check(offset, size_of::<T>(), align_of::<T>());
        // SAFETY: the range is inside the mapping and aligned for `T`
        // (checked); `T: Pod` accepts any bytes; by the caller's contract no
        // process writes the range any more and the writes happened before a
        // Release store this thread Acquired, so the read races with nothing.
        unsafe { std::ptr::read(self.base.add(offset).cast::<T>()) }
    }

    /// Copy `src` into the segment at `offset`. For bytes that no other
    /// process reads until a later Release store (or barrier) publishes them.
    ///
    /// # Panics
    /// If the range is outside the mapping (a crate bug).
    pub(crate) fn copy_in(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len(), 1);
        // SAFETY: destination range inside the mapping (checked); `src` is a
        // live slice in private memory, so the ranges cannot overlap; by the
        // caller's contract nobody reads the range concurrently.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(offset), src.len()) }
    }

    /// Raw pointer to `len` bytes at `offset`, for the typed views in
    /// [`crate::views`] only.
    ///
    /// # Panics
    /// If the range is outside the mapping or misaligned for `align`.
    #[must_use]
    pub(crate) fn ptr_at(&self, offset: usize, len: usize, align: usize) -> *mut u8 {
        self.check(offset, len, align);
        // SAFETY: `offset` is within the mapping (checked), so the add stays
        // in bounds of one allocation.
        unsafe { self.base.add(offset) }
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error()
        .map_or(Errno::UnknownErrno, Errno::from_raw)
}

/// Heap-backed segments for in-process tests (Miri cannot map shm objects).
#[cfg(test)]
pub(crate) mod heap {
    use std::alloc::Layout;
    use std::sync::Arc;

    use super::{Backing, Segment};

    /// A zeroed, page-aligned allocation.
    pub(crate) struct Buffer {
        ptr: *mut u8,
        layout: Layout,
    }

    // SAFETY: plain memory, accessed under the same rules as a mapping.
    unsafe impl Send for Buffer {}
    // SAFETY: as above.
    unsafe impl Sync for Buffer {}

    impl Drop for Buffer {
        fn drop(&mut self) {
            // SAFETY: allocated in `segment` with this layout, freed once.
            unsafe { std::alloc::dealloc(self.ptr, self.layout) }
        }
    }

    /// A segment of `len` zero bytes that [`share`] hands to other threads.
    pub(crate) fn segment(name: &str, len: usize) -> Segment {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("test layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "test allocation failed");
        let buf = Arc::new(Buffer { ptr, layout });
        Segment {
            base: buf.ptr,
            backing: Backing::Heap(buf),
            len,
            name: name.to_string(),
        }
    }

    /// Another handle on the same heap segment (another "process").
    pub(crate) fn share(seg: &Segment) -> Segment {
        match &seg.backing {
            Backing::Heap(buf) => Segment {
                base: buf.ptr,
                backing: Backing::Heap(Arc::clone(buf)),
                len: seg.len,
                name: seg.name.clone(),
            },
            Backing::Mapped { .. } => panic!("only heap segments are shared in tests"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cobre_shm_layout::{SegmentKind, FINGERPRINT, LAYOUT_VERSION, MAGIC, STATE_READY};

    fn sample() -> SegmentHeader {
        SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            kind: SegmentKind::Region as u32,
            fingerprint: FINGERPRINT,
            total_bytes: 8192,
            data_offset: 4096,
            world_size: 3,
            creator_pid: 77,
            created_unix_ns: 123_456_789,
            state: 0,
            abort: 0,
        }
    }

    /// The header publication protocol, raced between threads: a reader
    /// that sees READY sees every field. Run it under Miri to check that no
    /// access is a data race (`cargo +nightly miri test -p cobre-shm header`).
    #[test]
    fn header_publication_is_race_free() {
        let seg = heap::segment("/header-test", 4096);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let s = heap::share(&seg);
                std::thread::spawn(move || loop {
                    let h = s.read_header();
                    if h.state == STATE_READY {
                        return h;
                    }
                    assert!(
                        h.magic == 0 || h.magic == MAGIC,
                        "torn magic {:#x}",
                        h.magic
                    );
                    std::thread::yield_now();
                })
            })
            .collect();
        let mut h = sample();
        seg.write_header(&h);
        seg.atomic_u32(HEADER_STATE_OFFSET)
            .store(STATE_READY, Ordering::Release);
        h.state = STATE_READY;
        for r in readers {
            assert_eq!(r.join().expect("reader"), h);
        }
    }
}
