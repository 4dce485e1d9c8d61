//! What the bundle tests share: running `export`, `import` and `sync` from
//! a bundle on the real binary with a test mirror's trust, and taking a
//! bundle apart and putting it back together to damage it on purpose.

use std::path::{Path, PathBuf};

use cvdmirror::sync::bundle::Manifest;

use crate::support::process::{Finished, cvdmirror as binary, run};
use crate::support::world::{CVD_SIZE, FAST_CONFIG, Mirror, Outcome, World, trust_args};

/// Runs `cvdmirror ARGS` in `dir` with a clean environment.
pub fn cvdmirror(dir: &Path, args: &[String]) -> Finished {
    run(binary(args).current_dir(dir))
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

/// `cvdmirror export --root ROOT --out OUT`.
pub fn export(root: &Path, out: &Path) -> Finished {
    let dir = out.parent().unwrap();
    cvdmirror(
        dir,
        &[
            "export".into(),
            "--root".into(),
            s(root),
            "--out".into(),
            s(out),
        ],
    )
}

/// Trust for a target root: the test keys and `.sign` root (as the sync
/// suite's mirrors), or ClamAV's official ones only (genuine fixtures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Official keys plus the test keys and test PKI.
    Test,
    /// Official keys only.
    Official,
}

/// A config file and trust arguments in `dir`.
pub fn settings(dir: &Path, trust: Trust) -> Vec<String> {
    let config = dir.join("cvdmirror.toml");
    std::fs::write(&config, FAST_CONFIG).unwrap();
    let mut args = vec!["--config".into(), s(&config)];
    if trust == Trust::Test {
        args.extend(trust_args(dir));
    }
    args
}

/// `cvdmirror import BUNDLE --root ROOT` with `extra` flags.
pub fn import(bundle: &Path, root: &Path, trust: Trust, extra: &[&str]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["import".into(), s(bundle), "--root".into(), s(root)];
    args.extend(settings(dir.path(), trust));
    args.extend(extra.iter().map(|a| a.to_string()));
    cvdmirror(dir.path(), &args)
}

/// `cvdmirror sync --upstream URL --root ROOT --db bytecode`; DNS points
/// at a port nobody answers, so any lookup would fail the pass.
pub fn sync_from(url: &str, root: &Path) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "sync".into(),
        "--root".into(),
        s(root),
        "--upstream".into(),
        url.into(),
        "--db".into(),
        "bytecode".into(),
        "--nameserver".into(),
        "127.0.0.1:9".into(),
    ];
    args.extend(settings(dir.path(), Trust::Test));
    cvdmirror(dir.path(), &args)
}

/// A target mirror at 269 and a good bundle of 271 (cdiffs 269..=271)
/// in a temp dir.
pub fn setup() -> (Mirror, tempfile::TempDir, PathBuf) {
    let world = World::new();
    world.release(266, 269, CVD_SIZE);
    let target = Mirror::new();
    target.sync(&world).assert_ok();
    world.release(269, 271, CVD_SIZE);
    let source = Mirror::new();
    source.sync(&world).assert_ok();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("good.tar");
    export(&source.root, &bundle).assert_ok();
    (target, dir, bundle)
}

/// `file:///…` for a path.
pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.canonicalize().unwrap().display())
}

/// A bundle taken apart: its entries in order (the manifest included).
pub struct Parts {
    /// (name, bytes), in stored order.
    pub entries: Vec<(String, Vec<u8>)>,
}

impl Parts {
    /// Reads `bundle`.
    pub fn read(bundle: &Path) -> Parts {
        let mut archive = tar::Archive::new(std::fs::File::open(bundle).unwrap());
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            entries.push((name, bytes));
        }
        Parts { entries }
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> Manifest {
        serde_json::from_slice(self.get("manifest.json")).unwrap()
    }

    /// Replaces the manifest.
    pub fn set_manifest(&mut self, manifest: &Manifest) {
        *self.get_mut("manifest.json") = serde_json::to_vec_pretty(manifest).unwrap();
    }

    /// An entry's bytes.
    pub fn get(&self, name: &str) -> &Vec<u8> {
        &self.entries.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// An entry's bytes, to change.
    pub fn get_mut(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self.entries.iter_mut().find(|(n, _)| n == name).unwrap().1
    }

    /// Makes the manifest's size and SHA-256 of `name` match its bytes (a
    /// forger's bundle: consistent, but the content is bad).
    pub fn rehash(&mut self, name: &str) {
        use sha2::{Digest, Sha256};
        let bytes = self.get(name).clone();
        let mut manifest = self.manifest();
        let entry = manifest.files.iter_mut().find(|f| f.name == name).unwrap();
        entry.size = bytes.len() as u64;
        entry.sha256 = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.set_manifest(&manifest);
    }

    /// Writes the entries as a new bundle at `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, bytes) in &self.entries {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, name, &bytes[..]).unwrap();
        }
        builder.finish().unwrap();
        path.to_owned()
    }
}
