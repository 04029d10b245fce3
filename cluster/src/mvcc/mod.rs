//! # mvcc: etcd's data model over any engine
//!
//! etcd never overwrites a value. Every change gets a **revision** from a
//! cluster-wide counter, every revision's change is kept until a compaction
//! removes it, and a read can ask for the store "as of" any revision that has
//! not been compacted. That history is what watch replays, what Kubernetes'
//! `resourceVersion` is, and what makes compare-and-swap transactions on
//! `mod_revision` possible. This module is that model, written for the
//! [`engines::Engine`] trait so that it runs on all six engines.
//!
//! | file | one concept |
//! |---|---|
//! | [`revision`] | the `{main, sub}` revision and its byte form |
//! | [`kv`] | a key's state (`KeyValue`) and the stored record of one change |
//! | [`key_index`] | per key, its generations and revisions (in memory) |
//! | [`txn`] | requests, responses, etcd's request checks and compare rules |
//! | [`store`] | staging writes, publishing them, reads at a revision, compaction |
//!
//! # Layout in the engine
//!
//! ```text
//! h/<main u64 BE><sub u64 BE> -> one change: put (create_revision, version, lease, key, value) or tombstone (key)
//! m/mvcc-current              -> the newest revision, i64 BE
//! m/mvcc-compacted            -> the compaction point, i64 BE (0: never compacted)
//! ```
//!
//! The history is keyed by revision, so a write is an append in key order
//! (cheap on every engine, ideal for the LSM trees) and replaying history is
//! one sequential scan. Finding a key's value needs the key index, which
//! lives in memory, like etcd's `treeIndex`, and is rebuilt at start
//! ([`store`] states the cost).
//!
//! # Semantics (etcd's)
//!
//! * A fresh store is at revision 1; the first change gets revision 2.
//! * The main revision grows by one per transaction that changes something;
//!   the changes within it get sub revisions 0, 1, 2...
//! * Per key: `create_revision`, `mod_revision`, `version` (changes since
//!   creation), `lease`. A delete writes a tombstone that ends the key's
//!   generation; a later put creates it again with version 1.
//! * A read at a revision below the compaction point fails with "required
//!   revision has been compacted", one above the current revision with
//!   "required revision is a future revision".
//! * Compaction at `c` keeps each key's newest change at or below `c` (unless
//!   it is a tombstone) and everything newer.

pub mod key_index;
pub mod kv;
pub mod revision;
pub mod store;
pub mod txn;

pub use kv::KeyValue;
pub use revision::Revision;
pub use store::{MvccError, MvccStore, OpenStats, Staging};
