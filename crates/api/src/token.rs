//! Join tokens: `SWMTKN-1-<digest>-<secret>`, where digest is the sha256 of the root CA
//! certificate's PEM in base36 (50 chars) and secret is 16 random bytes in base36 (25 chars).
//! A joining node pins the CA it fetches to the digest before trusting it.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ids::base36;

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("invalid join token")]
    Malformed,
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

/// The CA digest a token pins: sha256 of the root CA PEM, base36, 50 characters.
pub fn ca_digest(ca_cert_pem: &str) -> String {
    base36(&Sha256::digest(ca_cert_pem.as_bytes()), DIGEST_LEN)
}

/// A new token for the CA with a fresh random secret.
pub fn generate(ca_cert_pem: &str) -> String {
    let mut secret = [0u8; 16];
    rand::rng().fill_bytes(&mut secret);
    format!(
        "{PREFIX}-{VERSION}-{}-{}",
        ca_digest(ca_cert_pem),
        base36(&secret, SECRET_LEN)
    )
}

impl JoinToken {
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = token.trim().split('-').collect();
        let [prefix, version, digest, secret] = parts.as_slice() else {
            return Err(TokenError::Malformed);
        };
        let base36_ok = |s: &str, len: usize| {
            s.len() == len
                && s.chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        };
        if *prefix != PREFIX
            || *version != VERSION
            || !base36_ok(digest, DIGEST_LEN)
            || !base36_ok(secret, SECRET_LEN)
        {
            return Err(TokenError::Malformed);
        }
        Ok(JoinToken {
            ca_digest: digest.to_string(),
            secret: secret.to_string(),
        })
    }
}

/// Compares two tokens in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_pin_the_ca() {
        let token = generate("-----BEGIN CERTIFICATE-----\nabc\n");
        assert!(token.starts_with("SWMTKN-1-"));
        assert_eq!(token.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
        let parsed = JoinToken::parse(&token).expect("parses");
        assert_eq!(
            parsed.ca_digest,
            ca_digest("-----BEGIN CERTIFICATE-----\nabc\n")
        );
        assert_ne!(parsed.ca_digest, ca_digest("other"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = generate("ca");
        let cases = [
            ("empty", String::new()),
            ("wrong prefix", good.replace("SWMTKN", "SWMTKX")),
            ("wrong version", good.replace("SWMTKN-1", "SWMTKN-2")),
            ("short secret", good[..good.len() - 1].to_string()),
            ("upper case", good.to_uppercase()),
            ("extra part", format!("{good}-x")),
        ];
        for (name, token) in cases {
            assert_eq!(
                JoinToken::parse(&token),
                Err(TokenError::Malformed),
                "{name}"
            );
        }
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
