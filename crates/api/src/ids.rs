//! Object IDs: 25 base36 characters from 128 random bits, as swarm's.

use rand::RngCore;

pub const ID_LEN: usize = 25;

/// Encodes `bytes` (big-endian) in base36, left-padded with '0' to `width`.
pub fn base36(bytes: &[u8], width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // Repeated division of a big-endian byte string by 36.
    let mut num: Vec<u8> = bytes.to_vec();
    let mut out = Vec::new();
    while num.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for byte in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 36) as u8;
            rem = acc % 36;
        }
        out.push(DIGITS[rem as usize]);
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

/// A new random object ID.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base36(&bytes, ID_LEN)
}

/// The 12-character prefix the CLI shows, as docker does.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_known_values() {
        assert_eq!(base36(&[0], 3), "000");
        assert_eq!(base36(&[35], 1), "z");
        assert_eq!(base36(&[36], 1), "10");
        assert_eq!(base36(&[1, 0], 0), "74"); // 256 = 7*36 + 4
        assert_eq!(base36(&[0xff; 16], 25).len(), 25);
    }

    #[test]
    fn ids_are_25_chars_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), ID_LEN);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(short(&a).len(), 12);
    }
}
