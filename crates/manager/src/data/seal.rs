//! The cluster's data key: secrets' data is sealed with it (ChaCha20-Poly1305, a random nonce
//! per seal) before it is proposed, so the raft log and snapshots hold only sealed bytes. Every
//! manager holds the key in a file beside its node key (0600); a manager joining raft gets it
//! in the join answer, over mTLS, from a manager. Agents never see it: the dispatcher opens a
//! secret only to send it to a node that runs a task using it.

use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8] = b"orchsec1";
const KEY_LEN: usize = 32;
const AAD: &[u8] = b"orch secret data";

#[derive(Clone)]
pub struct DataKey([u8; KEY_LEN]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Result<DataKey, String> {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| "no randomness for the data key".to_string())?;
        Ok(DataKey(key))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<DataKey, String> {
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| format!("a data key has {KEY_LEN} bytes, not {}", bytes.len()))?;
        Ok(DataKey(key))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads the key file.
    pub fn load(path: &Path) -> Result<DataKey, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the data key {}: {e}", path.display()))?;
        DataKey::from_bytes(&bytes)
    }

    fn cipher(&self) -> LessSafeKey {
        // A 32-byte key is always accepted by ChaCha20-Poly1305.
        #[allow(clippy::expect_used)]
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("32-byte key"))
    }

    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut buf = plain.to_vec();
        self.cipher()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + buf.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let rest = sealed
            .strip_prefix(MAGIC)
            .ok_or_else(|| "not sealed data".to_string())?;
        if rest.len() < NONCE_LEN {
            return Err("sealed data too short".into());
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let mut buf = body.to_vec();
        let plain = self
            .cipher()
            .open_in_place(nonce, Aad::from(AAD), &mut buf)
            .map_err(|_| "sealed data does not open with this cluster's data key".to_string())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_hides_the_plain_bytes() {
        let key = DataKey::generate().expect("key");
        let marker = b"marker-7f3a9c-db-password";
        let sealed = key.seal(marker).expect("seal");
        assert!(!sealed.windows(marker.len()).any(|w| w == marker));
        assert_ne!(sealed, key.seal(marker).expect("seal"), "a nonce per seal");
        assert_eq!(key.open(&sealed).expect("open"), marker);

        let other = DataKey::generate().expect("key");
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.open(&tampered).is_err());
        assert!(key.open(b"plain").is_err());
        assert!(DataKey::from_bytes(&[0; 5]).is_err());
    }
}
