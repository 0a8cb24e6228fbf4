//! Random identifiers: run ids, session tokens and spool-file suffixes.

/// `bytes` random bytes as lowercase hex (`2 * bytes` characters).
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.next_u32() as u8))
        .collect()
}
