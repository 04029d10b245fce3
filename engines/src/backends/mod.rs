//! The five engines that wrap a library: one file each, each a thin adapter
//! from the library's API to the [`Engine`](crate::Engine) contract.
//!
//! The adapters add no caching and no locking of their own beyond what the
//! contract requires, so a measurement of an engine through the trait is a
//! measurement of the library (the workload harness's `overhead` command
//! checks that claim). Each file's docs say exactly what a durable write
//! means for that library, because the libraries' defaults differ: redb
//! fsyncs every commit, rocksdb and fjall buffer by default, and sled
//! flushes on a timer.
//!
//! Our own engine, bitcask, is not an adapter and lives in
//! [`crate::bitcask`].

pub mod fjall;
pub mod memory;
pub mod redb;
pub mod rocksdb;
pub mod sled;

use std::ops::Bound;

/// Borrows a scan bound as a slice bound, the form the libraries take.
pub(crate) fn bound_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}
