//! The dozen libnuma functions cobre-shm uses, loaded with `dlopen` at run
//! time (`libnuma.so.1`, Debian's `libnuma1`), so a machine without libnuma
//! still runs: callers fall back to sysfs and raw syscalls.
//!
//! (`libnuma-sys` 0.0.9 does not compile on current Rust; binding the few
//! functions needed here keeps the intent.)

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::sync::OnceLock;

#[repr(C)]
struct Bitmask {
    size: c_ulong,
    maskp: *mut c_ulong,
}

type FnVoidInt = unsafe extern "C" fn() -> c_int;
type FnIntInt = unsafe extern "C" fn(c_int, c_int) -> c_int;
type FnSize = unsafe extern "C" fn(c_int, *mut i64) -> i64;
type FnToCpus = unsafe extern "C" fn(c_int, *mut Bitmask) -> c_int;
type FnAlloc = unsafe extern "C" fn() -> *mut Bitmask;
type FnFree = unsafe extern "C" fn(*mut Bitmask);
type FnIsSet = unsafe extern "C" fn(*const Bitmask, c_uint) -> c_int;
type FnSetBit = unsafe extern "C" fn(*mut Bitmask, c_uint) -> *mut Bitmask;
type FnSetPreferred = unsafe extern "C" fn(c_int);
type FnSetMembind = unsafe extern "C" fn(*mut Bitmask);

/// Entry points of a loaded libnuma whose `numa_available()` succeeded.
pub struct LibNuma {
    max_node: FnVoidInt,
    node_size64: FnSize,
    distance: FnIntInt,
    node_to_cpus: FnToCpus,
    allocate_cpumask: FnAlloc,
    allocate_nodemask: FnAlloc,
    bitmask_free: FnFree,
    bitmask_isbitset: FnIsSet,
    bitmask_setbit: FnSetBit,
    set_preferred: FnSetPreferred,
    set_membind: FnSetMembind,
    num_configured_cpus: FnVoidInt,
}

impl std::fmt::Debug for LibNuma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LibNuma")
    }
}

fn sym(handle: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `handle` is a live handle from dlopen (never closed) and
    // `name` a NUL-terminated string; dlsym only looks the symbol up.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

macro_rules! load {
    ($handle:expr, $name:literal, $ty:ty) => {{
        let p = sym($handle, $name)?;
        // SAFETY: the symbol comes from libnuma, whose C prototype for this
        // name is exactly `$ty` (numa.h, libnuma 2.x).
        unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
    }};
}

fn open() -> Option<LibNuma> {
    let name: *const c_char = c"libnuma.so.1".as_ptr();
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is kept
    // for the life of the process (never dlclose'd), so the function
    // pointers taken from it stay valid.
    let handle = unsafe { libc::dlopen(name, libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    let available: FnVoidInt = load!(handle, c"numa_available", FnVoidInt);
    // SAFETY: numa_available takes no arguments and has no preconditions.
    if unsafe { available() } < 0 {
        return None;
    }
    Some(LibNuma {
        max_node: load!(handle, c"numa_max_node", FnVoidInt),
        node_size64: load!(handle, c"numa_node_size64", FnSize),
        distance: load!(handle, c"numa_distance", FnIntInt),
        node_to_cpus: load!(handle, c"numa_node_to_cpus", FnToCpus),
        allocate_cpumask: load!(handle, c"numa_allocate_cpumask", FnAlloc),
        allocate_nodemask: load!(handle, c"numa_allocate_nodemask", FnAlloc),
        bitmask_free: load!(handle, c"numa_bitmask_free", FnFree),
        bitmask_isbitset: load!(handle, c"numa_bitmask_isbitset", FnIsSet),
        bitmask_setbit: load!(handle, c"numa_bitmask_setbit", FnSetBit),
        set_preferred: load!(handle, c"numa_set_preferred", FnSetPreferred),
        set_membind: load!(handle, c"numa_set_membind", FnSetMembind),
        num_configured_cpus: load!(handle, c"numa_num_configured_cpus", FnVoidInt),
    })
}

/// libnuma, if it is installed and the kernel supports NUMA.
pub fn get() -> Option<&'static LibNuma> {
    static LIB: OnceLock<Option<LibNuma>> = OnceLock::new();
    LIB.get_or_init(open).as_ref()
}

impl LibNuma {
    /// Highest node number.
    #[must_use]
    pub fn max_node(&self) -> i32 {
        // SAFETY: no arguments, no preconditions (numa_available succeeded).
        unsafe { (self.max_node)() }
    }

    /// CPUs of `node`, or `None` if libnuma reports an error.
    #[must_use]
    pub fn node_cpus(&self, node: u32) -> Option<Vec<u32>> {
        let node = c_int::try_from(node).ok()?;
        // SAFETY: no preconditions.
        let ncpus = unsafe { (self.num_configured_cpus)() };
        // SAFETY: returns a fresh mask sized for every configured CPU.
        let mask = unsafe { (self.allocate_cpumask)() };
        if mask.is_null() {
            return None;
        }
        // SAFETY: `mask` is a live cpumask from numa_allocate_cpumask.
        let rc = unsafe { (self.node_to_cpus)(node, mask) };
        let cpus = (rc == 0).then(|| {
            (0..c_uint::try_from(ncpus.max(0)).unwrap_or(0))
                // SAFETY: `mask` is live; isbitset checks the bit index
                // against the mask size itself.
                .filter(|&c| unsafe { (self.bitmask_isbitset)(mask, c) } != 0)
                .collect()
        });
        // SAFETY: `mask` came from numa_allocate_cpumask and is freed once.
        unsafe { (self.bitmask_free)(mask) };
        cpus
    }

    /// Memory of `node` in bytes.
    #[must_use]
    pub fn node_size(&self, node: u32) -> Option<u64> {
        let mut free = 0i64;
        // SAFETY: `free` is a live i64 the function writes.
        let size = unsafe { (self.node_size64)(c_int::try_from(node).ok()?, &mut free) };
        u64::try_from(size).ok()
    }

    /// SLIT distance between two nodes (10 = local).
    #[must_use]
    pub fn distance(&self, a: u32, b: u32) -> Option<u32> {
        // SAFETY: plain integers in, integer out.
        let d = unsafe { (self.distance)(c_int::try_from(a).ok()?, c_int::try_from(b).ok()?) };
        u32::try_from(d).ok().filter(|&d| d > 0)
    }

    /// Prefer allocating this thread's (and its children's) memory on `node`.
    pub fn set_preferred(&self, node: u32) {
        if let Ok(n) = c_int::try_from(node) {
            // SAFETY: plain integer argument; affects only the calling thread.
            unsafe { (self.set_preferred)(n) };
        }
    }

    /// Allocate this thread's memory only on `node`.
    pub fn set_membind(&self, node: u32) {
        // SAFETY: returns a fresh node mask.
        let mask = unsafe { (self.allocate_nodemask)() };
        if mask.is_null() {
            return;
        }
        // SAFETY: `mask` is live; setbit bounds-checks the index itself;
        // set_membind copies the mask; the mask is freed once.
        unsafe {
            (self.bitmask_setbit)(mask, node);
            (self.set_membind)(mask);
            (self.bitmask_free)(mask);
        }
    }
}
