//! Comparison of secrets (passwords, tokens, digests) in time that does not depend on where they differ.

/// Whether `a` equals `b`, in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_every_byte_and_the_length_match() {
        assert!(constant_time_eq(b"token-0123", b"token-0123"));
        assert!(!constant_time_eq(b"token-0123", b"token-0124"));
        assert!(!constant_time_eq(b"token", b"token-0123"));
        assert!(constant_time_eq(b"", b""));
    }
}
