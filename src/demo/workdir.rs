//! The demo's temporary directory: the upstream's and the mirror's files
//! live there, and it is removed at the end unless `--keep` asks otherwise.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The demo's temporary directory, removed on drop unless kept.
pub struct WorkDir {
    pub path: PathBuf,
    keep: bool,
}

impl WorkDir {
    pub fn create(parent: Option<&Path>, keep: bool) -> anyhow::Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nonce: u32 = rand::random();
        let path = parent.join(format!("cvdmirror-demo-{}-{nonce:08x}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            eprintln!("cvdmirror demo: cannot remove {}: {e}", self.path.display());
        }
    }
}
