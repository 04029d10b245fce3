//! Revisions: the logical clock of the store.
//!
//! A revision is a pair `{main, sub}`. `main` counts write transactions that
//! changed something: the store starts at main revision 1, so the first write
//! gets 2, and a transaction that changes nothing does not move it. `sub`
//! numbers the changes inside one transaction from 0, so a transaction that
//! puts three keys writes revisions `{n, 0}`, `{n, 1}` and `{n, 2}`, and all
//! three keys report `mod_revision` n (clients see only `main`).
//!
//! In the engine, every change is stored under its revision:
//! `h/` + main (8 bytes, big-endian) + sub (8 bytes, big-endian). Both halves
//! are non-negative, so byte order is revision order and a scan of `h/`
//! replays history from the oldest change kept.

/// One change's position in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// Prefix of the history records in the engine.
pub const HISTORY_PREFIX: &[u8] = b"h/";

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// The 16-byte big-endian form used in engine keys.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Revision> {
        let main: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let sub: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        (bytes.len() == 16)
            .then(|| Revision::new(i64::from_be_bytes(main), i64::from_be_bytes(sub)))
    }

    /// The engine key of the history record written at this revision.
    pub fn history_key(self) -> Vec<u8> {
        let mut key = Vec::with_capacity(HISTORY_PREFIX.len() + 16);
        key.extend_from_slice(HISTORY_PREFIX);
        key.extend_from_slice(&self.to_bytes());
        key
    }

    /// The revision an engine key of `h/` names, if it is one.
    pub fn from_history_key(key: &[u8]) -> Option<Revision> {
        Revision::from_bytes(key.strip_prefix(HISTORY_PREFIX)?)
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_revision_order() {
        let revisions = [
            Revision::new(1, 0),
            Revision::new(2, 0),
            Revision::new(2, 1),
            Revision::new(2, 255),
            Revision::new(2, 256),
            Revision::new(256, 0),
            Revision::new(i64::MAX, 0),
        ];
        for pair in revisions.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].history_key() < pair[1].history_key());
        }
        for revision in revisions {
            assert_eq!(
                Revision::from_history_key(&revision.history_key()),
                Some(revision)
            );
        }
        assert_eq!(Revision::from_history_key(b"h/short"), None);
        assert_eq!(Revision::from_history_key(b"k/0123456789abcdef"), None);
    }
}
