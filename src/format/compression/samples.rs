//! Seeded sample inputs for compression tests and benches (the benches
//! include this file by path, so it uses nothing from the crate).

/// Text-like bytes: words from a small vocabulary in a seeded order.
pub(crate) fn text(len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "offset ",
        "partition ",
        "leader ",
        "epoch ",
        "segment ",
        "index ",
        "batch ",
        "record ",
    ];
    let mut state = 0x2545_f491_u32;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        out.extend_from_slice(WORDS[(state % 8) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

/// Seeded random bytes (xorshift64).
pub(crate) fn random(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
