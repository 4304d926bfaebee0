//! The plain-data boundary: which element types may cross processes.
//!
//! Without cobre-comm's `mpi` feature, `CommData` is any
//! `Copy + Send + Sync + Default + 'static` type — `&'static str`, `Box`-free
//! structs holding references, and so on. Copying the bytes of such a value
//! into another process hands it a pointer into an address space it does not
//! have. So the shm backend accepts, for every collective and shared region:
//!
//! - the primitive numbers (`f32`, `f64`, every signed and unsigned integer
//!   width including `usize`/`isize`) — a superset of what cobre-comm's `mpi`
//!   build accepts, so code written for MPI runs unchanged;
//! - any type registered with [`register_plain_data`], which requires
//!   `bytemuck::Pod` (no pointers, no padding, every bit pattern valid).
//!
//! Anything else is refused before a byte is copied and before any rank
//! waits for another, with `CommError::CollectiveFailed` whose
//! `mpi_error_code` is [`MPI_ERR_TYPE`] (cobre-comm 0.18 has no
//! invalid-argument variant; `MPI_ERR_TYPE` is MPI's error class for an
//! invalid datatype) and whose message names the type. The decision depends
//! only on the type and the registrations, so ranks that register the same
//! types refuse the same calls, and the communicator stays usable.
//!
//! Register on every rank, before the first collective on the type:
//!
//! ```
//! # // With the `mpi` feature cobre-comm's CommData is MPI's primitives only.
//! # #[cfg(not(feature = "mpi"))] {
//! #[repr(C)]
//! #[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
//! struct Cut { intercept: f64, slot: u64 }
//! cobre_shm::register_plain_data::<Cut>();
//! assert!(cobre_shm::plain::is_plain_data::<Cut>());
//! # }
//! ```
#![forbid(unsafe_code)]

use std::any::{type_name, TypeId};
use std::sync::RwLock;

use bytemuck::Pod;
use cobre_comm::{CommData, CommError};

/// MPI's error class for an invalid datatype argument, used as the
/// `mpi_error_code` of a refused element type.
pub const MPI_ERR_TYPE: i32 = 3;

/// Types registered as plain data, by `TypeId`.
static REGISTERED: RwLock<Vec<TypeId>> = RwLock::new(Vec::new());

macro_rules! primitive {
    ($id:expr, $($t:ty),*) => { false $(|| $id == TypeId::of::<$t>())* };
}

fn is_primitive(id: TypeId) -> bool {
    primitive!(id, f64, f32, u64, i64, u32, i32, u8, usize, i8, u16, i16, u128, i128, isize)
}

/// Declare `T` plain data for the shm backend's collectives and regions.
/// Idempotent; call it on every rank.
pub fn register_plain_data<T: CommData + Pod>() {
    let id = TypeId::of::<T>();
    if is_primitive(id) {
        return;
    }
    let mut list = match REGISTERED.write() {
        Ok(l) => l,
        Err(poisoned) => poisoned.into_inner(),
    };
    if !list.contains(&id) {
        list.push(id);
    }
}

/// Whether `T` may cross processes: a primitive number or registered.
#[must_use]
pub fn is_plain_data<T: 'static>() -> bool {
    let id = TypeId::of::<T>();
    is_primitive(id)
        || match REGISTERED.read() {
            Ok(list) => list.contains(&id),
            Err(poisoned) => poisoned.into_inner().contains(&id),
        }
}

/// Refuse `T` for `operation` unless it is plain data.
///
/// # Errors
/// `CollectiveFailed` with `mpi_error_code` [`MPI_ERR_TYPE`] naming the type.
pub fn check<T: 'static>(operation: &'static str) -> Result<(), CommError> {
    if is_plain_data::<T>() {
        return Ok(());
    }
    Err(CommError::CollectiveFailed {
        operation,
        mpi_error_code: MPI_ERR_TYPE,
        message: format!(
            "invalid argument: element type `{}` is not plain data, so its bytes cannot be \
             copied to another process (it may hold pointers). The shm backend accepts the \
             primitive numbers and types registered with \
             cobre_shm::register_plain_data::<T>() (which requires bytemuck::Pod); nothing was \
             sent and the communicator is still usable",
            type_name::<T>()
        ),
    })
}

// Under `mpi`, cobre-comm narrows CommData to MPI's primitive types, so
// these records do not compile there.
#[cfg(all(test, not(feature = "mpi")))]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Default, Pod, bytemuck::Zeroable)]
    struct Pair {
        a: f64,
        b: u64,
    }

    #[derive(Clone, Copy, Default)]
    struct HoldsRef {
        _s: &'static str,
    }

    #[test]
    fn primitives_pass_pointers_fail_registered_pass() {
        assert!(check::<f64>("x").is_ok() && check::<usize>("x").is_ok());
        for e in [
            check::<&'static str>("broadcast"),
            check::<HoldsRef>("broadcast"),
            check::<bool>("broadcast"),
        ] {
            match e {
                Err(CommError::CollectiveFailed {
                    operation,
                    mpi_error_code,
                    message,
                }) => {
                    assert_eq!((operation, mpi_error_code), ("broadcast", MPI_ERR_TYPE));
                    assert!(message.contains("not plain data"), "{message}");
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert!(check::<Pair>("x").is_err());
        register_plain_data::<Pair>();
        register_plain_data::<Pair>();
        assert!(check::<Pair>("x").is_ok());
    }
}
