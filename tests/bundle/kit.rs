//! What the bundle tests share: running `export`, `import` and `sync` from
//! a bundle on the real binary with a test mirror's trust, and taking a
//! bundle apart and putting it back together to damage it on purpose.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cvdmirror::sync::bundle::Manifest;

use crate::world::{FAST_CONFIG, pki, trusted_key_args};

/// One run of the binary.
#[derive(Debug)]
pub struct Out {
    /// Exit 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit ok: {}\n--- stdout\n{}--- stderr\n{}",
            self.ok, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// Asserts exit 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok, "should have succeeded\n{self}");
        self
    }

    /// Asserts a non-zero exit whose stderr says every one of `words`.
    pub fn assert_failed(&self, words: &[&str]) -> &Self {
        assert!(!self.ok, "should have failed\n{self}");
        for word in words {
            assert!(
                self.stderr.contains(word),
                "stderr does not say {word:?}\n{self}"
            );
        }
        self
    }

    /// Asserts stdout says every one of `words`.
    pub fn says(&self, words: &[&str]) -> &Self {
        for word in words {
            assert!(
                self.stdout.contains(word),
                "stdout does not say {word:?}\n{self}"
            );
        }
        self
    }
}

/// Runs `cvdmirror ARGS` in `dir` with a clean environment.
pub fn cvdmirror(dir: &Path, args: &[String]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvdmirror"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CVDMIRROR_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    let out = cmd.output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

/// `cvdmirror export --root ROOT --out OUT`.
pub fn export(root: &Path, out: &Path) -> Out {
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
        let root_pem = dir.join("sign-root.pem");
        std::fs::write(&root_pem, pki().root_pem()).unwrap();
        args.extend(trusted_key_args());
        args.extend(["--sign-root".into(), s(&root_pem)]);
    }
    args
}

/// `cvdmirror import BUNDLE --root ROOT` with `extra` flags.
pub fn import(bundle: &Path, root: &Path, trust: Trust, extra: &[&str]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["import".into(), s(bundle), "--root".into(), s(root)];
    args.extend(settings(dir.path(), trust));
    args.extend(extra.iter().map(|a| a.to_string()));
    cvdmirror(dir.path(), &args)
}

/// `cvdmirror sync --upstream URL --root ROOT --db bytecode`; DNS points
/// at a port nobody answers, so any lookup would fail the pass.
pub fn sync_from(url: &str, root: &Path) -> Out {
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
