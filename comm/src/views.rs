//! Typed views and copies between private memory and shared segments.
//!
//! Every element type that reaches these functions passed
//! [`crate::plain::check`] (a primitive number or a registered
//! `bytemuck::Pod` type): any bit pattern is a valid value, and no value
//! holds a pointer. Ordering is the callers' business and follows one rule:
//! a range is only read after the barrier that follows its last write (the
//! staging buffers of [`crate::collectives`], regions after `fence` or
//! `publish_blocks`), and each range has one writer between two barriers.

use std::any::TypeId;
use std::mem::{align_of, size_of, size_of_val};

use bytemuck::Pod;

use crate::os::segment::Segment;

/// Copy `src` into `seg` at byte `offset`.
///
/// # Panics
/// If the range is outside the segment (a crate bug).
pub(crate) fn put<T: Copy>(seg: &Segment, offset: usize, src: &[T]) {
    let bytes = size_of_val(src);
    let dst = seg.ptr_at(offset, bytes, 1);
    // SAFETY: `ptr_at` checked that `bytes` bytes at `dst` lie in the
    // mapping; `src` is private memory so the ranges are disjoint; this rank
    // is the range's only writer until the next barrier and nobody reads it
    // before that barrier (module rule). A raw byte copy may copy padding.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().cast::<u8>(), dst, bytes) }
}

/// Copy `src` into `seg` at byte `offset` with non-temporal stores, which
/// write whole lines to memory without keeping them in this CPU's cache, so
/// a reader on another CPU loads them from memory instead of pulling
/// modified lines out of this CPU's cache (broadcast pieces of 32–128 KiB
/// measured 1.1–2× faster: `benches/README.md`, "Streaming stores"). Ends
/// with a store fence, so the barrier's release store that follows orders
/// them like ordinary stores. A plain copy where the instructions do not
/// exist (and under Miri).
///
/// # Panics
/// If the range is outside the segment (a crate bug).
pub(crate) fn put_streaming<T: Copy>(seg: &Segment, offset: usize, src: &[T]) {
    let bytes = size_of_val(src);
    let dst = seg.ptr_at(offset, bytes, 1);
    // SAFETY: as `put`: `ptr_at` checked the range, `src` is private memory
    // disjoint from it, and this rank is its only writer until the next
    // barrier, which nobody passes before this returns.
    unsafe { stream_copy(src.as_ptr().cast::<u8>(), dst, bytes) }
}

/// `bytes` bytes from `src` to `dst`: plain copies up to the first 64-byte
/// boundary of `dst` and after the last, non-temporal 16-byte stores (SSE2,
/// part of x86-64) in between, then `sfence`.
///
/// # Safety
/// `src` readable and `dst` writable for `bytes` bytes, not overlapping.
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn stream_copy(src: *const u8, dst: *mut u8, bytes: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    const LINE: usize = 64;
    let head = dst.align_offset(LINE).min(bytes);
    let body = (bytes - head) / LINE * LINE;
    // SAFETY: `head + body <= bytes`, so every pointer below stays in the
    // two ranges the caller vouches for; `dst + head` is 64-byte aligned
    // (or `body` is 0), so each 16-byte store target is 16-byte aligned as
    // `_mm_stream_si128` requires; loads are unaligned (`loadu`); SSE2 is
    // part of the x86-64 baseline.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, head);
        let (mut s, mut d) = (src.add(head), dst.add(head));
        let end = d.add(body);
        while d < end {
            for k in 0..LINE / 16 {
                let v = _mm_loadu_si128(s.add(16 * k).cast::<__m128i>());
                _mm_stream_si128(d.add(16 * k).cast::<__m128i>(), v);
            }
            s = s.add(LINE);
            d = d.add(LINE);
        }
        std::ptr::copy_nonoverlapping(s, d, bytes - head - body);
        _mm_sfence();
    }
}

/// Plain copy (no non-temporal stores on this target, or Miri).
///
/// # Safety
/// As the x86-64 version.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
unsafe fn stream_copy(src: *const u8, dst: *mut u8, bytes: usize) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, bytes) }
}

/// Copy `dst.len()` elements out of `seg` at byte `offset`.
///
/// # Panics
/// If the range is outside the segment (a crate bug).
pub(crate) fn get<T: Copy>(seg: &Segment, offset: usize, dst: &mut [T]) {
    let bytes = size_of_val(dst);
    let src = seg.ptr_at(offset, bytes, 1);
    // SAFETY: the source range lies in the mapping (checked by `ptr_at`) and
    // `dst` is private memory, so they are disjoint. The range was written
    // before the barrier this rank passed and nobody writes it until the
    // next one (module rule); its bytes are values of plain-data `T`.
    unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr().cast::<u8>(), bytes) }
}

/// Write `T::default()` into `count` elements at byte `offset` (a region's
/// first touch of a rank's own block).
///
/// # Panics
/// If the range is outside the segment or misaligned (a crate bug).
pub(crate) fn fill_default<T: Copy + Default>(seg: &Segment, offset: usize, count: usize) {
    let p = seg
        .ptr_at(
            offset,
            count.saturating_mul(size_of::<T>()),
            align_of::<T>(),
        )
        .cast::<T>();
    for i in 0..count {
        // SAFETY: `ptr_at` checked bounds and alignment of `count` elements,
        // so element `i < count` is in range; this rank is the block's only
        // writer before the creation barrier; `write` does not read the old
        // bytes.
        unsafe { p.add(i).write(T::default()) };
    }
}

/// A read-only view of `count` `U`s at byte `offset` of `seg`, valid while
/// no process writes that range (the module rule).
///
/// # Panics
/// If the range is outside the segment or misaligned for `U` (a crate bug).
#[must_use]
pub(crate) fn view<U: Pod>(seg: &Segment, offset: usize, count: usize) -> &[U] {
    let bytes = count.saturating_mul(size_of::<U>());
    let p = seg.ptr_at(offset, bytes, align_of::<U>());
    // SAFETY: `ptr_at` checked bounds and alignment for `count` values of
    // `U`; `U: Pod` accepts any bit pattern; the mapping outlives the borrow
    // of `seg`; the protocol excludes writers to this range meanwhile.
    unsafe { std::slice::from_raw_parts(p.cast::<U>(), count) }
}

/// The `count` elements of a region at byte `offset`, for reading.
///
/// # Panics
/// If the range is outside the segment or misaligned for `T` (a crate bug).
#[must_use]
pub(crate) fn region_slice<T: Copy>(seg: &Segment, offset: usize, count: usize) -> &[T] {
    let p = seg.ptr_at(
        offset,
        count.saturating_mul(size_of::<T>()),
        align_of::<T>(),
    );
    // SAFETY: bounds and alignment checked; every element was initialised
    // by its owner before the creation barrier and only ever overwritten
    // with values of the plain-data `T`; in this process no `&mut` exists
    // meanwhile (writers take the region by `&mut`); other processes write a
    // range only between the fences that bracket its reads (module rule).
    unsafe { std::slice::from_raw_parts(p.cast::<T>(), count) }
}

/// The `count` elements of a region at byte `offset`, for the leader's
/// writes (`SharedRegion::as_mut_slice` on rank 0).
///
/// # Panics
/// If the range is outside the segment or misaligned for `T` (a crate bug).
#[must_use]
pub(crate) fn region_slice_mut<T: Copy>(
    seg: &mut Segment,
    offset: usize,
    count: usize,
) -> &mut [T] {
    let p = seg.ptr_at(
        offset,
        count.saturating_mul(size_of::<T>()),
        align_of::<T>(),
    );
    // SAFETY: as `region_slice`; the exclusive borrow of the segment (owned
    // by one region value) excludes every other borrow in this process, and
    // only the leader obtains this view, so no other process writes the
    // region until the leader's next fence.
    unsafe { std::slice::from_raw_parts_mut(p.cast::<T>(), count) }
}

/// The bytes of `s`, for a cross-memory read to fill.
#[must_use]
pub(crate) fn bytes_mut<T: Copy>(s: &mut [T]) -> &mut [u8] {
    let len = size_of_val(s);
    // SAFETY: `s` is `len` bytes of initialised memory borrowed exclusively
    // for the returned lifetime; `u8` has no alignment or validity
    // requirement; `T` passed the plain-data check (module doc), so any
    // bytes written through the view leave valid `T`s behind.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), len) }
}

/// Reinterpret `&[T]` as `&[U]` when `T` and `U` are the same type.
#[must_use]
pub(crate) fn same_type<T: 'static, U: 'static>(s: &[T]) -> Option<&[U]> {
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
pub(crate) fn same_type_mut<T: 'static, U: 'static>(s: &mut [T]) -> Option<&mut [U]> {
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
    fn streaming_copies_every_byte_at_every_alignment() {
        let src: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for off in [0usize, 1, 15, 16, 63, 64, 65] {
            for len in [0usize, 1, 63, 64, 65, 127, 128, 500, 1000 - 65] {
                let mut buf = vec![0xAAu8; 1200];
                // SAFETY: `off + len <= 1065 < 1200` and `len <= 1000`; two
                // distinct vectors.
                unsafe { stream_copy(src.as_ptr(), buf.as_mut_ptr().add(off), len) };
                assert_eq!(
                    &buf[off..off + len],
                    &src[..len],
                    "offset {off}, {len} bytes"
                );
                assert!(
                    buf[..off].iter().all(|&b| b == 0xAA),
                    "before, offset {off}"
                );
                assert!(
                    buf[off + len..].iter().all(|&b| b == 0xAA),
                    "after, offset {off}"
                );
            }
        }
    }

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
