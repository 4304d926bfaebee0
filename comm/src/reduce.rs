//! Element-wise reductions for `allreduce`, chosen once per call by element
//! type and operation, folded left in rank order `0..R` on every rank (the
//! same additions in the same order everywhere: bit-identical results).
#![forbid(unsafe_code)]

use std::any::{type_name, TypeId};

use bytemuck::Pod;
use cobre_comm::ReduceOp;

use crate::os::segment::Segment;
use crate::views;

/// Element types `allreduce` supports.
pub(crate) trait Element: Pod + 'static {
    /// Whether `BitwiseOr` is defined.
    const BITWISE: bool;
    fn sum(a: Self, b: Self) -> Self;
    fn min(a: Self, b: Self) -> Self;
    fn max(a: Self, b: Self) -> Self;
    fn bor(a: Self, b: Self) -> Self;
}

macro_rules! integer_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const BITWISE: bool = true;
            fn sum(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            fn min(a: Self, b: Self) -> Self { Ord::min(a, b) }
            fn max(a: Self, b: Self) -> Self { Ord::max(a, b) }
            fn bor(a: Self, b: Self) -> Self { a | b }
        }
    )*};
}
integer_element!(i32, i64, u8, u32, u64, usize);

macro_rules! float_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const BITWISE: bool = false;
            fn sum(a: Self, b: Self) -> Self { a + b }
            fn min(a: Self, b: Self) -> Self { a.min(b) }
            fn max(a: Self, b: Self) -> Self { a.max(b) }
            fn bor(a: Self, _b: Self) -> Self { a }
        }
    )*};
}
float_element!(f32, f64);

const SUM: u8 = 0;
const MIN: u8 = 1;
const MAX: u8 = 2;
const BOR: u8 = 3;

#[inline]
fn combine<U: Element, const OP: u8>(a: U, b: U) -> U {
    match OP {
        SUM => U::sum(a, b),
        MIN => U::min(a, b),
        MAX => U::max(a, b),
        _ => U::bor(a, b),
    }
}

fn fold_private<T: 'static, U: Element, const OP: u8>(acc: &mut [T], other: &[T]) {
    if let (Some(a), Some(b)) = (
        views::same_type_mut::<T, U>(acc),
        views::same_type::<T, U>(other),
    ) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x = combine::<U, OP>(*x, y);
        }
    }
}

fn fold_shared<T: 'static, U: Element, const OP: u8>(acc: &mut [T], seg: &Segment, offset: usize) {
    if let Some(a) = views::same_type_mut::<T, U>(acc) {
        let b = views::view::<U>(seg, offset, a.len());
        for (x, &y) in a.iter_mut().zip(b) {
            *x = combine::<U, OP>(*x, y);
        }
    }
}

/// The fold for one `(T, op)` pair.
pub(crate) struct Reducer<T> {
    private: fn(&mut [T], &[T]),
    shared: fn(&mut [T], &Segment, usize),
}

impl<T: 'static> Reducer<T> {
    /// Select the fold for `T` and `op`.
    ///
    /// # Errors
    /// A message naming the type and operation when the pair is unsupported.
    pub(crate) fn new(op: ReduceOp) -> Result<Self, String> {
        macro_rules! dispatch {
            ($($u:ty),*) => {$(
                if TypeId::of::<T>() == TypeId::of::<$u>() {
                    return Self::for_type::<$u>(op);
                }
            )*};
        }
        dispatch!(f32, f64, i32, i64, u8, u32, u64, usize);
        Err(format!(
            "allreduce({op:?}) does not support element type {}: supported are f32, f64, i32, \
             i64, u8, u32, u64 and usize (BitwiseOr on the integer types only)",
            type_name::<T>()
        ))
    }

    fn for_type<U: Element>(op: ReduceOp) -> Result<Self, String> {
        Ok(match op {
            ReduceOp::Sum => Self {
                private: fold_private::<T, U, SUM>,
                shared: fold_shared::<T, U, SUM>,
            },
            ReduceOp::Min => Self {
                private: fold_private::<T, U, MIN>,
                shared: fold_shared::<T, U, MIN>,
            },
            ReduceOp::Max => Self {
                private: fold_private::<T, U, MAX>,
                shared: fold_shared::<T, U, MAX>,
            },
            ReduceOp::BitwiseOr if U::BITWISE => Self {
                private: fold_private::<T, U, BOR>,
                shared: fold_shared::<T, U, BOR>,
            },
            ReduceOp::BitwiseOr => {
                return Err(format!(
                    "allreduce(BitwiseOr) does not support element type {}: BitwiseOr is defined \
                     for the integer types i32, i64, u8, u32, u64 and usize only",
                    type_name::<U>()
                ))
            }
        })
    }

    /// `acc[i] = op(acc[i], other[i])`.
    pub(crate) fn fold(&self, acc: &mut [T], other: &[T]) {
        (self.private)(acc, other);
    }

    /// `acc[i] = op(acc[i], staged[i])` for the elements staged at `offset`.
    pub(crate) fn fold_shared(&self, acc: &mut [T], seg: &Segment, offset: usize) {
        (self.shared)(acc, seg, offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold<T: Copy + 'static>(op: ReduceOp, a: &[T], b: &[T]) -> Vec<T> {
        let mut acc = a.to_vec();
        Reducer::<T>::new(op).expect("supported").fold(&mut acc, b);
        acc
    }

    #[test]
    fn folds_each_operation() {
        assert_eq!(
            fold(ReduceOp::Sum, &[1.5f64, 2.0], &[1.0, -3.0]),
            vec![2.5, -1.0]
        );
        assert_eq!(fold(ReduceOp::Min, &[1i64, 5], &[3, -2]), vec![1, -2]);
        assert_eq!(fold(ReduceOp::Max, &[1u8, 5], &[3, 2]), vec![3, 5]);
        assert_eq!(
            fold(ReduceOp::BitwiseOr, &[0b01u32, 0], &[0b10, 4]),
            vec![0b11, 4]
        );
        assert_eq!(fold(ReduceOp::Sum, &[u64::MAX], &[2]), vec![1]);
    }

    #[test]
    fn unsupported_pairs_name_type_and_operation() {
        let e = Reducer::<f64>::new(ReduceOp::BitwiseOr)
            .err()
            .expect("unsupported");
        assert!(e.contains("BitwiseOr") && e.contains("f64"), "{e}");
        let e = Reducer::<i16>::new(ReduceOp::Sum)
            .err()
            .expect("unsupported");
        assert!(e.contains("Sum") && e.contains("i16"), "{e}");
        let e = Reducer::<(f64, f64)>::new(ReduceOp::Max)
            .err()
            .expect("unsupported");
        assert!(e.contains("Max") && e.contains("(f64, f64)"), "{e}");
    }
}
