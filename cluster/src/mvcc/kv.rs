//! A key's value at a revision, and how one change is stored.
//!
//! [`KeyValue`] is what clients see, with etcd's fields and meanings:
//! `create_revision` is the main revision of the put that created the key
//! (in its current generation), `mod_revision` the main revision of its last
//! change, `version` the number of changes since it was created (1 after the
//! creating put; a delete resets it), `lease` the lease it is attached to (0
//! for none).
//!
//! Each change is stored in the engine under `h/<revision>` (see
//! [`super::revision`]) as one record:
//!
//! ```text
//! kind u8 (1 = put, 2 = tombstone) | create_revision i64 BE | version i64 BE
//! | lease i64 BE | key length u32 BE | key | value
//! ```
//!
//! `mod_revision` is not stored: it is the record's own revision. A tombstone
//! stores the key and nothing else (zeros), so a replay of history can close
//! the key's generation.

/// A key's state at a revision, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

const KIND_PUT: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const HEADER: usize = 1 + 8 + 8 + 8 + 4;

/// One stored change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Put {
        key: Vec<u8>,
        create_revision: i64,
        version: i64,
        lease: i64,
        value: Vec<u8>,
    },
    Tombstone {
        key: Vec<u8>,
    },
}

impl Record {
    pub fn key(&self) -> &[u8] {
        match self {
            Record::Put { key, .. } | Record::Tombstone { key } => key,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let (kind, key, create, version, lease, value): (u8, &[u8], i64, i64, i64, &[u8]) =
            match self {
                Record::Put {
                    key,
                    create_revision,
                    version,
                    lease,
                    value,
                } => (KIND_PUT, key, *create_revision, *version, *lease, value),
                Record::Tombstone { key } => (KIND_TOMBSTONE, key, 0, 0, 0, &[]),
            };
        let mut out = Vec::with_capacity(HEADER + key.len() + value.len());
        out.push(kind);
        out.extend_from_slice(&create.to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&lease.to_be_bytes());
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    /// Decodes a stored record; the error says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Record, String> {
        if bytes.len() < HEADER {
            return Err(format!(
                "history record of {} bytes is shorter than its {HEADER}-byte header",
                bytes.len()
            ));
        }
        let word = |at: usize| {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(&bytes[at..at + 8]);
            i64::from_be_bytes(buf)
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[25..29]);
        let key_len = u32::from_be_bytes(len) as usize;
        let key = bytes
            .get(HEADER..HEADER + key_len)
            .ok_or_else(|| format!("history record's key length {key_len} points past its end"))?
            .to_vec();
        match bytes[0] {
            KIND_PUT => Ok(Record::Put {
                key,
                create_revision: word(1),
                version: word(9),
                lease: word(17),
                value: bytes[HEADER + key_len..].to_vec(),
            }),
            KIND_TOMBSTONE => Ok(Record::Tombstone { key }),
            other => Err(format!("history record of unknown kind {other}")),
        }
    }

    /// The client's view of a put record written at main revision `main`.
    pub fn into_key_value(self, main: i64) -> Option<KeyValue> {
        match self {
            Record::Put {
                key,
                create_revision,
                version,
                lease,
                value,
            } => Some(KeyValue {
                key,
                create_revision,
                mod_revision: main,
                version,
                value,
                lease,
            }),
            Record::Tombstone { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_reported() {
        let put = Record::Put {
            key: b"k\x00\xff".to_vec(),
            create_revision: 2,
            version: 3,
            lease: 7,
            value: b"value".to_vec(),
        };
        let tomb = Record::Tombstone { key: b"k".to_vec() };
        for record in [&put, &tomb] {
            assert_eq!(&Record::decode(&record.encode()).unwrap(), record);
        }
        let encoded = put.encode();
        assert!(
            Record::decode(&encoded[..10])
                .unwrap_err()
                .contains("header")
        );
        assert!(
            Record::decode(&encoded[..HEADER + 1])
                .unwrap_err()
                .contains("past")
        );
        let mut bad = encoded.clone();
        bad[0] = 9;
        assert!(Record::decode(&bad).unwrap_err().contains("unknown kind"));
        let kv = put.into_key_value(5).unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 5, 3));
        assert_eq!(tomb.into_key_value(6), None);
    }
}
