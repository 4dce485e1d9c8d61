//! A file's bytes as one slice without copying them onto the heap, for the
//! checks that need the whole file at once: OpenSSL's `PKCS7_verify` takes
//! the detached content as one buffer, and a `main.cvd` is 160 MB. Mapped,
//! its pages are page cache the kernel can drop, not 160 MB of the
//! mirror's own memory (ClamAV itself reads the whole file into memory).
//!
//! The second place in cvdmirror with `unsafe` (the first is
//! `server::pacing`): mapping a file is unsafe because another process
//! could change it underneath. The files mapped here are the engine's own
//! staged downloads or its published files, which it replaces only by
//! rename, never by writing in place; a mapping keeps the old inode.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

/// The contents of a file, mapped read-only.
pub struct Mapped {
    map: Option<Mmap>,
}

impl Mapped {
    /// Maps the file at `path` (an empty file maps to an empty slice).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Self { map: None });
        }
        // SAFETY: see the module comment: the engine never writes a mapped
        // file in place, so the slice cannot change while it is read.
        let map = unsafe { Mmap::map(&file)? };
        Ok(Self { map: Some(map) })
    }
}

impl Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_contents_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full");
        let empty = dir.path().join("empty");
        std::fs::write(&full, b"ClamAV-VDB:").unwrap();
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(&*Mapped::open(&full).unwrap(), b"ClamAV-VDB:");
        assert!(Mapped::open(&empty).unwrap().is_empty());
        assert!(Mapped::open(&dir.path().join("absent")).is_err());
    }
}
