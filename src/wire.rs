//! Typed views and copies between private slices and shared segments.
//!
//! Crate invariant for [`get`]: bytes are only read from staging after the
//! barrier of the same collective step, and every rank of that step passed a
//! barrier signature that includes the element type's name and size (see
//! [`crate::sync::signature`]); so the bytes were written by [`put`] from
//! valid values of the same `T`, in the same program build (checked by the
//! layout fingerprint on attach).

use std::any::TypeId;
use std::mem::{align_of, size_of, size_of_val};

use bytemuck::Pod;

use crate::os::segment::Segment;

/// Copy `src` into `seg` at byte `offset`.
///
/// # Panics
/// If the range is outside the segment (a crate bug).
pub fn put<T: Copy>(seg: &Segment, offset: usize, src: &[T]) {
    let bytes = size_of_val(src);
    let dst = seg.ptr_at(offset, bytes, 1);
    // SAFETY: `ptr_at` checked that `bytes` bytes at `dst` lie in the
    // mapping; `src` is private memory so the ranges are disjoint. A raw
    // byte copy may copy padding bytes of `T`.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().cast::<u8>(), dst, bytes) }
}

/// Copy `dst.len()` elements out of `seg` at byte `offset` (see the module
/// invariant: those bytes hold values of `T` written by [`put`]).
///
/// # Panics
/// If the range is outside the segment (a crate bug).
pub fn get<T: Copy>(seg: &Segment, offset: usize, dst: &mut [T]) {
    let bytes = size_of_val(dst);
    let src = seg.ptr_at(offset, bytes, 1);
    // SAFETY: the source range lies in the mapping (checked by `ptr_at`) and
    // `dst` is private memory, so they are disjoint. The bytes are valid `T`
    // values by the module invariant.
    unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr().cast::<u8>(), bytes) }
}

/// A read-only view of `count` `U`s at byte `offset` of `seg`, valid while
/// no process writes that range (ensured by the barrier protocol).
///
/// # Panics
/// If the range is outside the segment or misaligned for `U` (a crate bug).
#[must_use]
pub fn view<U: Pod>(seg: &Segment, offset: usize, count: usize) -> &[U] {
    let bytes = count.saturating_mul(size_of::<U>());
    let p = seg.ptr_at(offset, bytes, align_of::<U>());
    // SAFETY: `ptr_at` checked bounds and alignment for `count` values of
    // `U`; `U: Pod` accepts any bit pattern; the mapping outlives the borrow
    // of `seg`; the protocol excludes writers to this range meanwhile.
    unsafe { std::slice::from_raw_parts(p.cast::<U>(), count) }
}

/// Reinterpret `&[T]` as `&[U]` when `T` and `U` are the same type.
#[must_use]
pub fn same_type<T: 'static, U: 'static>(s: &[T]) -> Option<&[U]> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        // SAFETY: `T` and `U` are the same type (equal `TypeId`s), so the
        // pointer, length and lifetime describe valid `U`s.
        Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<U>(), s.len()) })
    } else {
        None
    }
}

/// Reinterpret `&mut [T]` as `&mut [U]` when `T` and `U` are the same type.
#[must_use]
pub fn same_type_mut<T: 'static, U: 'static>(s: &mut [T]) -> Option<&mut [U]> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        // SAFETY: same type (equal `TypeId`s); the exclusive borrow moves into
        // the returned slice.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<U>(), s.len()) })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_type_casts_only_identical_types() {
        let mut v = [1.0f64, 2.0];
        assert_eq!(same_type::<f64, f64>(&v), Some(&[1.0f64, 2.0][..]));
        assert!(same_type::<f64, u64>(&v).is_none());
        assert!(same_type_mut::<f64, f32>(&mut v).is_none());
        if let Some(s) = same_type_mut::<f64, f64>(&mut v) {
            s[0] = 5.0;
        }
        assert_eq!(v[0], 5.0);
    }
}
