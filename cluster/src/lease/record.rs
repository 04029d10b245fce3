//! How a lease is stored in the engine, beside the state machine's other
//! metadata:
//!
//! ```text
//! m/lease/<id as u64, 16 hex digits> -> TTL in seconds, i64 BE
//! ```
//!
//! The record is written and deleted in the same engine batch as the
//! applied index of the entry that granted or revoked it, so the
//! exactly-once rule of the state machine covers leases too. Snapshots
//! carry it like every other key.

pub const LEASE_PREFIX: &[u8] = b"m/lease/";

pub fn lease_key(id: i64) -> Vec<u8> {
    let mut key = LEASE_PREFIX.to_vec();
    key.extend_from_slice(format!("{:016x}", id as u64).as_bytes());
    key
}

pub fn encode_ttl(ttl: i64) -> Vec<u8> {
    ttl.to_be_bytes().to_vec()
}

/// The (id, TTL) of a stored lease record; the error says what is wrong.
pub fn decode(key: &[u8], value: &[u8]) -> Result<(i64, i64), String> {
    let id = key
        .strip_prefix(LEASE_PREFIX)
        .and_then(|hex| std::str::from_utf8(hex).ok())
        .filter(|hex| hex.len() == 16)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| "expected 16 hex digits after m/lease/".to_string())?;
    let ttl: [u8; 8] = value
        .try_into()
        .map_err(|_| format!("expected an 8-byte TTL, found {} bytes", value.len()))?;
    Ok((id as i64, i64::from_be_bytes(ttl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        for (id, ttl) in [(1i64, 60i64), (i64::MAX, 9_000_000_000), (-5, 2)] {
            assert_eq!(decode(&lease_key(id), &encode_ttl(ttl)), Ok((id, ttl)));
        }
        assert!(decode(b"m/lease/xyz", &encode_ttl(1)).is_err());
        assert!(decode(&lease_key(1), b"abc").is_err());
    }
}
