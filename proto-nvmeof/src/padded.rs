//! Fixed-width string fields of NVMe data structures: ASCII fields are space padded (serial,
//! model, firmware), NQN fields NUL padded. Shared by Identify, discovery, log pages and the
//! Connect data, so none of them depends on another for it.

/// `text` as printable ASCII, space padded or cut to `len` bytes.
pub fn ascii_padded(text: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = text
        .bytes()
        .map(|b| {
            if b.is_ascii_graphic() || b == b' ' {
                b
            } else {
                b' '
            }
        })
        .take(len)
        .collect();
    v.resize(len, b' ');
    v
}

/// `text` NUL padded or cut to `len` bytes, keeping a terminating NUL (NQN fields).
pub fn nul_padded(text: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = text.bytes().take(len.saturating_sub(1)).collect();
    v.resize(len, 0);
    v
}
