//! `V = C · Xᵀ` for cut selection, by `matrixmultiply::dgemm` exactly as
//! upstream cobre-sddp 0.18 calls it (same crate, version and features,
//! same arguments), so the cut values it compares at a 1e-10 tolerance are
//! bit-identical to upstream's. The only `unsafe` of the engine.

/// `v[k × m_len + j] = Σ_i coef[k × d + i] · states[j × d + i]` for
/// `k < k_rows`, `j < m_len`.
///
/// # Panics
/// When a slice is shorter than its dimensions say.
pub fn values(coef: &[f64], states: &[f64], k_rows: usize, d: usize, m_len: usize, v: &mut [f64]) {
    if k_rows == 0 || d == 0 || m_len == 0 {
        return;
    }
    assert!(
        coef.len() >= k_rows * d && states.len() >= m_len * d && v.len() >= k_rows * m_len,
        "gemm: slices shorter than {k_rows} x {d} x {m_len}"
    );
    let stride = |x: usize| isize::try_from(x).unwrap_or(isize::MAX);
    // SAFETY: the assert above checked that `coef` holds `k_rows × d`
    // values (row stride `d`, column stride 1), `states` holds `m_len × d`
    // (read as a `d × m_len` matrix with row stride 1 and column stride
    // `d`) and `v` holds `k_rows × m_len` (row stride `m_len`); `v` is an
    // exclusive borrow, so it aliases neither input, and with beta = 0 its
    // previous contents are not read.
    unsafe {
        matrixmultiply::dgemm(
            k_rows,
            d,
            m_len,
            1.0,
            coef.as_ptr(),
            stride(d),
            1,
            states.as_ptr(),
            1,
            stride(d),
            0.0,
            v.as_mut_ptr(),
            stride(m_len),
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_the_dot_products() {
        // Two cuts over a 3-dimensional state, at two states.
        let coef = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
        let states = [1.0, 1.0, 1.0, 2.0, 0.0, -1.0];
        let mut v = [0.0; 4];
        super::values(&coef, &states, 2, 3, 2, &mut v);
        assert_eq!(v, [6.0, -1.0, -0.5, -2.0]);
    }
}
