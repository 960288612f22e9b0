//! Verification ids: what callers hold and stores key on. Their own module,
//! below both the verification and the code HMACs bound to them.

use std::{fmt, sync::Arc};

use rand::rngs::OsRng;
use rand::{RngCore as _, TryRngCore as _};

/// `VE` and 32 lowercase hex digits from the OS CSPRNG, so ids cannot be
/// guessed or enumerated. A store may fix the first four digits (its shard,
/// see [`VerificationId::generate_in`]); the other 112 bits stay random.
///
/// Shared (`Arc`): each copy (a reply, the expiry queue, a watcher) costs a
/// reference count, not another string. The memory store keeps only the
/// id's bits ([`VerificationId::to_bits`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerificationId(Arc<str>);

const ID_PREFIX: &str = "VE";
const ID_RANDOM_BYTES: usize = 16;

impl VerificationId {
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_RANDOM_BYTES];
        OsRng.unwrap_err().fill_bytes(&mut bytes);
        Self::of_bytes(bytes)
    }

    /// An id whose first two bytes are `shard`, so that a store can find
    /// where the verification lives from its id alone.
    pub fn generate_in(shard: [u8; 2]) -> Self {
        let mut bytes = [0u8; ID_RANDOM_BYTES];
        OsRng.unwrap_err().fill_bytes(&mut bytes);
        bytes[..2].copy_from_slice(&shard);
        Self::of_bytes(bytes)
    }

    /// The prefix and the bytes in hex, written into one buffer and shared
    /// from there: one allocation, where formatting took several (every
    /// start makes an id, every memory-store read rebuilds one).
    fn of_bytes(bytes: [u8; ID_RANDOM_BYTES]) -> Self {
        let mut text = [0u8; ID_PREFIX.len() + 2 * ID_RANDOM_BYTES];
        text[..ID_PREFIX.len()].copy_from_slice(ID_PREFIX.as_bytes());
        hex::encode_to_slice(bytes, &mut text[ID_PREFIX.len()..])
            .expect("the buffer holds two hex digits per byte");
        Self(
            std::str::from_utf8(&text)
                .expect("ASCII prefix and hex digits")
                .into(),
        )
    }

    /// The four hex digits `generate_in` took from its shard.
    pub fn shard(&self) -> &str {
        &self.0[ID_PREFIX.len()..ID_PREFIX.len() + 4]
    }

    pub fn parse(input: &str) -> Option<Self> {
        let hex_part = input.strip_prefix(ID_PREFIX)?;
        let ok = hex_part.len() == 2 * ID_RANDOM_BYTES
            && hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(input.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's 128 random bits, for a store that keeps ids as integers
    /// (the memory store: 16 bytes in place of a shared string). Every id
    /// `parse` accepts has them.
    pub fn to_bits(&self) -> u128 {
        let mut bytes = [0u8; ID_RANDOM_BYTES];
        hex::decode_to_slice(&self.0[ID_PREFIX.len()..], &mut bytes)
            .expect("parse and generate make 32 hex digits");
        u128::from_be_bytes(bytes)
    }

    /// The id `to_bits` gave these bits for.
    pub fn from_bits(bits: u128) -> Self {
        Self::of_bytes(bits.to_be_bytes())
    }
}

impl fmt::Debug for VerificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for VerificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip_through_parse() {
        let a = VerificationId::generate();
        assert_ne!(a, VerificationId::generate());
        assert_eq!(VerificationId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.as_str().len(), 34);
        for bad in [
            "",
            "VE",
            "ve0123456789abcdef0123456789abcdef",
            "VE0123456789ABCDEF0123456789abcdef",
        ] {
            assert_eq!(VerificationId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_round_trip_through_their_bits() {
        let a = VerificationId::generate();
        assert_eq!(VerificationId::from_bits(a.to_bits()), a);
        let sharded = VerificationId::generate_in([0xab, 0x01]);
        assert_eq!(sharded.shard(), "ab01");
        assert_eq!(VerificationId::from_bits(sharded.to_bits()), sharded);
        let known = VerificationId::parse("VE000102030405060708090a0b0c0d0e0f").expect("valid");
        assert_eq!(known.to_bits(), 0x000102030405060708090a0b0c0d0e0f);
    }
}
