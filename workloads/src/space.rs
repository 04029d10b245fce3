//! Space on disk, two ways: what the files say they hold and what the
//! filesystem allocated for them.
//!
//! The *apparent* size of a file is its length (`st_size`); the *allocated*
//! size is the blocks the filesystem reserved for it (`st_blocks × 512`).
//! They differ both ways: a preallocated or sparse file (fjall's journals
//! are created at their full size and filled later) has a length far above
//! its blocks, and a file's last block is allocated whole. Space
//! amplification is computed from the allocated bytes, which is what the
//! data set costs the disk; the apparent bytes are kept beside them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// The two sizes of a directory tree, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    /// Sum of the regular files' lengths.
    pub apparent: u64,
    /// Sum of the regular files' allocated blocks × 512.
    pub allocated: u64,
}

/// Walks `path` (a file or a directory, recursively; symbolic links are not
/// followed) and adds up its regular files. A missing path holds nothing; a
/// file that vanishes during the walk (an engine deleting an obsolete
/// table) is skipped.
pub fn disk_space(path: &Path) -> Result<DiskSpace> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DiskSpace::default()),
        Err(e) => return Err(e).context(|| format!("cannot stat {}", path.display())),
    };
    if meta.is_file() {
        return Ok(DiskSpace {
            apparent: meta.len(),
            allocated: meta.blocks() * 512,
        });
    }
    let mut total = DiskSpace::default();
    if !meta.is_dir() {
        return Ok(total);
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(total),
        Err(e) => return Err(e).context(|| format!("cannot list {}", path.display())),
    };
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let sub = disk_space(&entry.path())?;
        total.apparent += sub.apparent;
        total.allocated += sub.allocated;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn a_sparse_file_is_large_but_allocates_little() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = fs::File::create(dir.path().join("sparse")).unwrap();
        file.seek(SeekFrom::Start(64 << 20)).unwrap();
        file.write_all(b"end").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/dense"), vec![7u8; 1 << 20]).unwrap();
        let space = disk_space(dir.path()).unwrap();
        assert_eq!(space.apparent, (64 << 20) + 3 + (1 << 20));
        // The dense MiB is allocated; the 64 MiB hole is not.
        assert!(space.allocated >= 1 << 20, "{space:?}");
        assert!(space.allocated < 8 << 20, "{space:?}");
        assert_eq!(
            disk_space(&dir.path().join("missing")).unwrap(),
            DiskSpace::default()
        );
    }
}
