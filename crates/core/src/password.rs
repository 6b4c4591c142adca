//! Passwords as RabbitMQ keeps them (`rabbit_password_hashing_sha256`): a random 4-byte salt,
//! then SHA-256 of the salt followed by the password's UTF-8 bytes; exported as the base64 of
//! salt and digest together, so that a `password_hash` moves between RabbitMQ's definitions
//! and warren's both ways. The password itself is never kept.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The hashing algorithm's name in RabbitMQ's definitions.
pub const ALGORITHM: &str = "rabbit_password_hashing_sha256";

const SALT: usize = 4;
const LEN: usize = SALT + 32;

/// A salted SHA-256 password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash([u8; LEN]);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

fn digest(salt: &[u8], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str) -> PasswordHash {
        let mut salt = [0u8; SALT];
        // The OS's random source; should it fail, a salt from the clock still differs per
        // hash (the salt only has to keep equal passwords from hashing alike).
        if getrandom::getrandom(&mut salt).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            salt = t.to_be_bytes();
        }
        Self::with_salt(salt, password)
    }

    fn with_salt(salt: [u8; SALT], password: &str) -> PasswordHash {
        let mut out = [0u8; LEN];
        out[..SALT].copy_from_slice(&salt);
        out[SALT..].copy_from_slice(&digest(&salt, password));
        PasswordHash(out)
    }

    /// A hash as RabbitMQ exports it (base64 of salt and digest); `None` if it is not one.
    pub fn from_base64(text: &str) -> Option<PasswordHash> {
        let bytes = STANDARD.decode(text.trim()).ok()?;
        Some(PasswordHash(bytes.try_into().ok()?))
    }

    /// The hash as RabbitMQ exports it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Whether `password` is the one hashed (compared in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let d = digest(&self.0[..SALT], password);
        d.iter().zip(&self.0[SALT..]).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = PasswordHash::new("s3cret");
        assert!(h.verify("s3cret"));
        assert!(!h.verify("s3cre"));
        assert!(!h.verify(""));
        assert_ne!(h, PasswordHash::new("s3cret"), "salted: equal passwords hash apart");
        assert_eq!(PasswordHash::from_base64(&h.to_base64()), Some(h));
    }

    #[test]
    fn the_format_is_rabbitmqs() {
        // salt 0x01020304, password "guest": base64(salt ++ sha256(salt ++ "guest")).
        let h = PasswordHash::with_salt([1, 2, 3, 4], "guest");
        let mut expect = vec![1u8, 2, 3, 4];
        expect.extend_from_slice(&Sha256::digest(b"\x01\x02\x03\x04guest"));
        assert_eq!(h.to_base64(), STANDARD.encode(&expect));
        assert_eq!(h.to_base64().len(), 48);
    }

    #[test]
    fn hashes_from_rabbitmq_verify() {
        // Made by RabbitMQ 3.10.8: `rabbitmqctl add_user hasher hunter2`, then
        // `rabbitmqctl export_definitions`.
        let h = PasswordHash::from_base64(RABBIT_HASH).expect("a RabbitMQ hash");
        assert!(h.verify("hunter2"));
        assert!(!h.verify("hunter3"));
        assert_eq!(PasswordHash::from_base64("not base64!"), None);
        assert_eq!(PasswordHash::from_base64("AAAA"), None, "too short");
    }

    const RABBIT_HASH: &str = "47TidMsANnQsTnRjnuBRxjjvIHlaHO5+0avDRNfDaamrd0Lk";
}
