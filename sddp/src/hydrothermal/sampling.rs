//! Counter-based randomness: every number is a pure function of a key
//! (seed, stage, opening, ...), so any rank or thread can produce any part
//! of the opening tree or any sample, in any order, identically.
#![forbid(unsafe_code)]

fn mix(mut z: u64) -> u64 {
    // SplitMix64 finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit hash of `key`.
#[must_use]
pub fn hash<const N: usize>(key: [u64; N]) -> u64 {
    key.iter().fold(0x9e37_79b9_7f4a_7c15, |h, &k| {
        mix(h ^ k.wrapping_add(0x9e37_79b9_7f4a_7c15))
    })
}

/// A uniform number in `[0, 1)` determined by `key`.
#[must_use]
pub fn uniform<const N: usize>(key: [u64; N]) -> f64 {
    (hash(key) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal number determined by `key` (Box–Muller).
#[must_use]
pub fn normal(key: [u64; 4]) -> f64 {
    let [a, b, c, d] = key;
    let u1 = 1.0 - uniform([a, b, c, d, 0]); // in (0, 1]
    let u2 = uniform([a, b, c, d, 1]);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A lognormal number with the given mean and standard deviation.
#[must_use]
pub fn lognormal(mean: f64, std: f64, key: [u64; 4]) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    if std <= 0.0 {
        return mean;
    }
    let s2 = (1.0 + (std / mean).powi(2)).ln();
    (mean.ln() - 0.5 * s2 + s2.sqrt() * normal(key)).exp()
}

/// Pick an index from `probabilities` (summing to 1) with the uniform `u`.
#[must_use]
pub fn pick(probabilities: impl IntoIterator<Item = f64>, u: f64) -> usize {
    let mut acc = 0.0;
    let mut last = 0;
    for (k, p) in probabilities.into_iter().enumerate() {
        acc += p;
        last = k;
        if u < acc {
            return k;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniforms_are_in_range_and_keyed() {
        let a = uniform([1, 2, 3]);
        assert_eq!(a, uniform([1, 2, 3]));
        assert_ne!(a, uniform([1, 2, 4]));
        assert!((0..10_000)
            .map(|i| uniform([i]))
            .all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn lognormal_has_the_requested_moments() {
        let n = 200_000u64;
        let xs: Vec<f64> = (0..n)
            .map(|i| lognormal(100.0, 30.0, [7, 0, i, 0]))
            .collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!((mean - 100.0).abs() < 0.5, "mean {mean}");
        assert!((var.sqrt() - 30.0).abs() < 0.5, "std {}", var.sqrt());
        assert!(xs.iter().all(|&x| x > 0.0));
        assert_eq!(lognormal(0.0, 5.0, [0; 4]), 0.0);
        assert_eq!(lognormal(5.0, 0.0, [0; 4]), 5.0);
    }

    #[test]
    fn pick_follows_probabilities() {
        assert_eq!(pick([0.2, 0.3, 0.5], 0.0), 0);
        assert_eq!(pick([0.2, 0.3, 0.5], 0.25), 1);
        assert_eq!(pick([0.2, 0.3, 0.5], 0.999), 2);
        let counts = (0..30_000u64).fold([0usize; 3], |mut c, i| {
            c[pick([0.2, 0.3, 0.5], uniform([i]))] += 1;
            c
        });
        assert!(
            (counts[1] as f64 / 30_000.0 - 0.3).abs() < 0.02,
            "{counts:?}"
        );
    }
}
