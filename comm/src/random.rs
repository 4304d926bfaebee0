//! Random bits from the operating system (`/dev/urandom`), for names that
//! another local user must not be able to predict.
#![forbid(unsafe_code)]

use std::io::Read;

/// `N` random 64-bit words from the kernel.
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn words<const N: usize>() -> std::io::Result<[u64; N]> {
    let mut bytes = vec![0u8; 8 * N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut out = [0u64; N];
    for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    Ok(out)
}

/// `N` random words as lowercase hex (16 digits each).
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn hex<const N: usize>() -> std::io::Result<String> {
    Ok(words::<N>()?.iter().map(|w| format!("{w:016x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_differ() {
        let a = super::words::<2>().expect("urandom");
        let b = super::words::<2>().expect("urandom");
        assert_ne!(a, b);
        assert_eq!(super::hex::<2>().expect("urandom").len(), 32);
    }
}
