//! POSIX shared-memory segments: `shm_open`, `ftruncate`, `mmap`, `shm_unlink`,
//! OFD byte locks for liveness, and bounds-checked access to the mapped bytes.
//!
//! This module and [`super::futex`] hold every raw pointer of the crate that
//! points into shared memory. Everything a caller can reach is safe and
//! bounds-checked; offsets that are out of range or misaligned are crate bugs
//! and panic.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64};

use bytemuck::Pod;
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

/// A mapped POSIX shared-memory segment.
///
/// The mapping is `MAP_SHARED`, read-write, and covers the whole file as it
/// was when mapped. The file descriptor stays open for the life of the value:
/// OFD locks taken through it are released by the kernel when the process
/// dies, whatever the cause, which is how peers detect a dead rank.
pub struct Segment {
    fd: OwnedFd,
    map: MmapRaw,
    name: String,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.map.len())
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
    /// Mapped.
    Ready(Segment),
}

impl Segment {
    /// Create `name` exclusively (`O_CREAT | O_EXCL`, mode 0600), size it to
    /// `len` bytes and map it. The new bytes are zero.
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
    /// at least `min_len` bytes long.
    ///
    /// # Errors
    /// Any errno other than `ENOENT` from `shm_open`, or from `fstat`/`mmap`.
    pub fn open(name: &str, min_len: usize) -> Result<Opened, OsError> {
        let fd = match shm_open(name, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Opened::Missing),
            Err(e) => return Err(OsError::new("shm_open", name, e)),
        };
        let st = fstat(&fd).map_err(|e| OsError::new("fstat", name, e))?;
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
        Ok(Self {
            fd,
            map,
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
        self.map.len()
    }

    /// Whether the mapping is empty (never true for a mapped segment).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Bytes available to an unprivileged user on the filesystem holding the
    /// segment (`/dev/shm`).
    ///
    /// # Errors
    /// From `fstatvfs`.
    pub fn free_bytes(&self) -> Result<u64, OsError> {
        let vfs = nix::sys::statvfs::fstatvfs(&self.fd)
            .map_err(|e| OsError::new("fstatvfs", &self.name, e))?;
        Ok(vfs.blocks_available().saturating_mul(vfs.fragment_size()))
    }

    /// Base address of the mapping, for `mbind` only.
    #[must_use]
    pub fn base_addr(&self) -> usize {
        self.map.as_ptr() as usize
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
        let fl = Self::flock(byte, libc::F_WRLCK);
        match fcntl(&self.fd, FcntlArg::F_OFD_SETLK(&fl)) {
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
        let mut fl = Self::flock(byte, libc::F_WRLCK);
        fcntl(&self.fd, FcntlArg::F_OFD_GETLK(&mut fl))
            .map_err(|e| OsError::new("fcntl(F_OFD_GETLK)", &self.name, e))?;
        Ok(i32::from(fl.l_type) != libc::F_UNLCK)
    }

    fn check(&self, offset: usize, len: usize, align: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.map.len()) && offset % align == 0,
            "cobre-shm bug: access [{offset}, +{len}) align {align} outside segment {} of {} bytes",
            self.name,
            self.map.len()
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
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }

    /// The 64-bit atomic word at `offset`.
    ///
    /// # Panics
    /// If `offset` is out of range or not 8-aligned (a crate bug).
    #[must_use]
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: as in `atomic_u32`, for 8 bytes 8-aligned.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }

    /// Copy a `Pod` value out of the segment (a snapshot; concurrent atomic
    /// updates of words inside it may or may not be seen).
    ///
    /// # Panics
    /// If the range is outside the mapping (a crate bug).
    #[must_use]
    pub fn read_pod<T: Pod>(&self, offset: usize) -> T {
        self.check(offset, size_of::<T>(), align_of::<T>());
        // SAFETY: the range is inside the mapping and aligned for `T`
        // (checked); `T: Pod` accepts any bytes; volatile because other
        // processes write the memory.
        unsafe { std::ptr::read_volatile(self.map.as_ptr().add(offset).cast::<T>()) }
    }

    /// Write a `Pod` value into the segment. Only for fields no other process
    /// reads before a later release store publishes them.
    ///
    /// # Panics
    /// If the range is outside the mapping (a crate bug).
    pub fn write_pod<T: Pod>(&self, offset: usize, value: &T) {
        self.copy_in(offset, bytemuck::bytes_of(value));
    }

    /// Copy `src` into the segment at `offset`.
    ///
    /// # Panics
    /// If the range is outside the mapping (a crate bug).
    pub fn copy_in(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len(), 1);
        // SAFETY: destination range inside the mapping (checked); `src` is a
        // live slice in private memory, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                src.len(),
            );
        }
    }

    /// Copy `dst.len()` bytes out of the segment at `offset`.
    ///
    /// # Panics
    /// If the range is outside the mapping (a crate bug).
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len(), 1);
        // SAFETY: source range inside the mapping (checked); `dst` is private
        // memory, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
    }

    /// Raw pointer to `len` bytes at `offset`, for the typed views in
    /// [`crate::wire`] and [`crate::region`] only.
    ///
    /// # Panics
    /// If the range is outside the mapping or misaligned for `align`.
    #[must_use]
    pub fn ptr_at(&self, offset: usize, len: usize, align: usize) -> *mut u8 {
        self.check(offset, len, align);
        // SAFETY: `offset` is within the mapping (checked), so the add stays
        // in bounds of one allocation.
        unsafe { self.map.as_mut_ptr().add(offset) }
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error()
        .map_or(Errno::UnknownErrno, Errno::from_raw)
}
