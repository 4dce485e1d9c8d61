//! The world a sync test runs in: the fake upstream and its DNS TXT server
//! on a private runtime, generated database chains signed with the test
//! keys, a mirror root that the real `cvdmirror sync` binary brings up to
//! date, and the checks every test shares (the served set verifies, nothing
//! previously served changed, upstream etiquette was kept).
//!
//! Tests are plain `#[test]` functions: they drive child processes and
//! wait on them, and the servers they talk to run on the world's runtime.
//! The sync, bundle and real-client suites share it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use cvdmirror::cvd::build::sign::TestPki;
use cvdmirror::cvd::build::{self, DbSpec};
use cvdmirror::cvd::sign::{SignVerifier, cvd_sign_name};
use cvdmirror::cvd::testkeys::{self, SigningKeys};
use cvdmirror::cvd::{
    self, Expected, ExtraKey, HEADER_LEN, Header, HeaderSignature, KeyRole, Legacy, TrustedKeys,
};
use cvdmirror::dns::VersionRecord;
use cvdmirror::dns::test_server::{Behaviour, TxtServer};
use sha2::{Digest, Sha256};

pub use super::process::Outcome;
use super::process::{Finished, cvdmirror, run};
use super::upstream::{Logged, Upstream, show};

/// The database the generated chains are for.
pub const DB: &str = "bytecode";
/// Size of generated CVDs unless a test asks for more.
pub const CVD_SIZE: u64 = 300 * 1024;
/// The TXT record name the fake DNS answers for.
pub const DNS_NAME: &str = "current.cvd.cvdmirror.test";
/// The prefix of a ClamAV 1.5 detached signature file.
pub const SIGN_MAGIC: &str = "#clamsign-1.0";

/// Upstream, DNS and the runtime they run on.
pub struct World {
    /// The fake HTTP upstream.
    pub up: Upstream,
    /// The fake DNS TXT server.
    pub dns: TxtServer,
    record: Mutex<VersionRecord>,
    // Last: the servers stop (on drop) before their runtime goes away.
    _rt: tokio::runtime::Runtime,
}

impl World {
    /// Upstream and DNS on free loopback ports; DNS advertises bytecode 0.
    pub fn new() -> World {
        Self::with_dns(SocketAddr::from(([127, 0, 0, 1], 0)), DNS_NAME)
    }

    /// Like [`World::new`] with the DNS server at `addr` answering for `name`
    /// (cvdupdate only asks `current.cvd.clamav.net` on port 53).
    pub fn with_dns(addr: SocketAddr, name: &str) -> World {
        Self::try_with_dns(addr, name)
            .unwrap_or_else(|e| panic!("cannot start the test DNS server on {addr}: {e}"))
    }

    /// Like [`World::with_dns`], but a DNS server that cannot bind is an error.
    pub fn try_with_dns(addr: SocketAddr, name: &str) -> std::io::Result<World> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let record = VersionRecord::parse("1.4.3:62:27000:0:0:90:49191:0")
            .unwrap()
            .stamped(SystemTime::now());
        let up = rt.block_on(Upstream::start());
        let dns = rt.block_on(async {
            TxtServer::start_at(addr, name, Behaviour::Txt(record.to_string())).await
        });
        Ok(World {
            up,
            dns: dns?,
            record: Mutex::new(record),
            _rt: rt,
        })
    }

    /// DNS advertises `version` for `db` from the next query on.
    pub fn advertise(&self, db: &str, version: u32) {
        let mut record = self.record.lock().unwrap();
        assert!(record.set_version(db, version));
        *record = record.stamped(SystemTime::now());
        self.dns.set_record(record.to_string());
    }

    /// What DNS advertises now.
    pub fn record(&self) -> String {
        self.record.lock().unwrap().to_string()
    }

    /// The flags of a `cvdmirror serve` that syncs `bytecode` from this
    /// world every `interval`, asking its DNS for versions.
    pub fn serve_args(&self, interval: &str) -> Vec<String> {
        [
            "--sync-interval",
            interval,
            "--upstream",
            &self.up.url(),
            "--dns-name",
            self.dns.name(),
            "--nameserver",
            &self.dns.addr().to_string(),
            "--db",
            DB,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Publishes generated `bytecode` `version` upstream as upstream does
    /// since ClamAV 1.5: the CVD (of `size` bytes) and the cdiffs
    /// `from+1..=version`, each with its `.sign`, then advertises it.
    pub fn release(&self, from: u32, version: u32, size: u64) {
        for v in from + 1..=version {
            self.put_signed(&cdiff_name(v), &cdiff(v));
        }
        self.put_cvd(&cvd(version, size));
        self.advertise(DB, version);
    }

    /// Like [`World::release`], without `.sign` files (upstream before 1.5).
    pub fn release_unsigned(&self, from: u32, version: u32, size: u64) {
        for v in from + 1..=version {
            self.up.put(&cdiff_name(v), &cdiff(v));
        }
        self.up.put("bytecode.cvd", &cvd(version, size));
        self.advertise(DB, version);
    }

    /// Puts `bytecode.cvd` and its `.sign` (named by its header's version).
    pub fn put_cvd(&self, bytes: &[u8]) {
        let version = cvd::Header::parse(bytes).unwrap().version;
        self.up.put(&cvd_sign_name(DB, version), &sign(bytes));
        self.up.put("bytecode.cvd", bytes);
    }

    /// Publishes ClamAV's genuine `bytecode-{version}.cvd` fixture as
    /// upstream's `bytecode.cvd` (no `.sign`) and advertises it.
    pub fn put_genuine(&self, version: u32) {
        self.up.put(
            "bytecode.cvd",
            &super::fixture(&format!("bytecode-{version}.cvd")),
        );
        self.advertise(DB, version);
    }

    /// Upstream moves from the genuine 268 to the genuine 339 as ClamAV's
    /// did: the CVD, and the cdiffs in between as ClamAV's zero-byte
    /// "fetch the whole CVD" signal.
    pub fn genuine_268_to_339(&self) {
        for v in 269..=339 {
            self.up.put(&cdiff_name(v), b"");
        }
        self.put_genuine(339);
    }

    /// Puts `name` and `name.sign`.
    pub fn put_signed(&self, name: &str, bytes: &[u8]) {
        self.up.put(&format!("{name}.sign"), &sign(bytes));
        self.up.put(name, bytes);
    }
}

/// The test PKI every test mirror trusts (`--sign-root`).
pub fn pki() -> &'static TestPki {
    TestPki::shared().unwrap()
}

/// A `.sign` for `bytes`, signed with [`pki`].
pub fn sign(bytes: &[u8]) -> Vec<u8> {
    pki().sign(bytes).unwrap()
}

/// What a test mirror trusts for `.sign` files: the test PKI's root.
pub fn sign_verifier() -> SignVerifier {
    SignVerifier::new(pki().roots().unwrap())
}

/// `bytecode-N.cdiff`.
pub fn cdiff_name(version: u32) -> String {
    format!("{DB}-{version}.cdiff")
}

/// The test signing keys.
pub fn keys() -> &'static SigningKeys {
    static KEYS: OnceLock<SigningKeys> = OnceLock::new();
    KEYS.get_or_init(testkeys::signing_keys)
}

/// What a test mirror trusts: the official keys and the test keys.
pub fn trusted() -> TrustedKeys {
    testkeys::trusted()
}

/// What a test mirror trusts besides the official keys, as arguments: the
/// test keys (`--trusted-key`) and the test PKI's root (`--sign-root`,
/// written into `dir`).
pub fn trust_args(dir: &Path) -> Vec<String> {
    let sign_root = dir.join("sign-root.pem");
    std::fs::write(&sign_root, pki().root_pem()).unwrap();
    let mut args = trusted_key_args();
    args.push("--sign-root".to_owned());
    args.push(sign_root.to_string_lossy().into_owned());
    args
}

/// The test public keys as `--trusted-key` arguments.
pub fn trusted_key_args() -> Vec<String> {
    let public = testkeys::public_keys();
    let mut args = Vec::new();
    for role in [KeyRole::Cvd, KeyRole::Info, KeyRole::Cdiff] {
        for key in public.keys(role) {
            args.push("--trusted-key".to_owned());
            args.push(
                ExtraKey {
                    role,
                    key: key.clone(),
                }
                .to_string(),
            );
        }
    }
    args
}

type Cache = Mutex<HashMap<(u32, u64), Arc<Vec<u8>>>>;

/// Generated `bytecode` CVD `version` of about `size` bytes (memoized:
/// signing is slow in a debug build and every test needs the same files).
pub fn cvd(version: u32, size: u64) -> Arc<Vec<u8>> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(bytes) = cache.lock().unwrap().get(&(version, size)) {
        return Arc::clone(bytes);
    }
    let bytes = Arc::new(build::cvd(&DbSpec::new(DB, version).size(size), keys()).unwrap());
    cache
        .lock()
        .unwrap()
        .insert((version, size), Arc::clone(&bytes));
    bytes
}

/// Generated, signed `bytecode-N.cdiff` (memoized).
pub fn cdiff(version: u32) -> Arc<Vec<u8>> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(bytes) = cache.lock().unwrap().get(&(version, 0)) {
        return Arc::clone(bytes);
    }
    let bytes = Arc::new(build::cdiff(DB, version, keys()).unwrap());
    cache
        .lock()
        .unwrap()
        .insert((version, 0), Arc::clone(&bytes));
    bytes
}

/// The default `[sync]` settings of a test mirror: one attempt (faults
/// fail fast), a 1 s stall timer, a little history.
pub const FAST_CONFIG: &str = r#"
[sync]
attempts = 1
stall_timeout = "1s"
connect_timeout = "2s"
backfill = 3
max_requests_per_file_per_hour = 10
"#;

/// One run of `cvdmirror sync` (its output through `Deref`), and what
/// upstream saw during it.
#[derive(Debug)]
pub struct Run {
    /// The process.
    pub out: Finished,
    /// What upstream saw during the run.
    pub requests: Vec<Logged>,
}

impl std::ops::Deref for Run {
    type Target = Finished;
    fn deref(&self) -> &Finished {
        &self.out
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}--- upstream saw\n{}", self.out, show(&self.requests))
    }
}

impl Outcome for Run {
    fn finished(&self) -> &Finished {
        &self.out
    }
}

impl Run {
    /// Requests for `file` (name without `/`).
    pub fn requests_for(&self, file: &str) -> Vec<&Logged> {
        self.requests.iter().filter(|r| r.file() == file).collect()
    }
}

/// A mirror root and the settings `cvdmirror sync` runs with.
pub struct Mirror {
    /// Holds the root and the config file (unless the root is borrowed).
    pub dir: tempfile::TempDir,
    /// The served root.
    pub root: PathBuf,
    config: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Mirror {
    /// An empty root with [`FAST_CONFIG`] and the test keys trusted.
    pub fn new() -> Mirror {
        Self::with_config(FAST_CONFIG)
    }

    /// An empty root with this config file.
    pub fn with_config(toml: &str) -> Mirror {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        Self::at(dir, root, toml)
    }

    /// A mirror whose root is `root` (e.g. the directory a test server serves).
    pub fn at(dir: tempfile::TempDir, root: PathBuf, toml: &str) -> Mirror {
        let config = dir.path().join("cvdmirror.toml");
        std::fs::write(&config, toml).unwrap();
        let args = trust_args(dir.path());
        Mirror {
            dir,
            root,
            config,
            args,
            envs: Vec::new(),
        }
    }

    /// Trust ClamAV's official keys only (for the genuine fixtures).
    pub fn official_keys_only(mut self) -> Mirror {
        self.args.retain(|_| false);
        self
    }

    /// Extra arguments for every run.
    pub fn arg(mut self, arg: &str) -> Mirror {
        self.args.push(arg.to_owned());
        self
    }

    /// An environment variable for every run.
    pub fn env(mut self, key: &str, value: &str) -> Mirror {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The command for one pass against `world`.
    pub fn command(&self, world: &World) -> Command {
        let mut cmd = cvdmirror(["sync"]);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--config")
            .arg(&self.config)
            .args(["--upstream", &world.up.url()])
            .args(["--dns-name", world.dns.name()])
            .args(["--nameserver", &world.dns.addr().to_string()])
            .args(["--db", DB])
            .args(&self.args)
            .current_dir(self.dir.path());
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs one pass to completion.
    pub fn sync(&self, world: &World) -> Run {
        let mark = world.up.mark();
        let run = Run {
            out: run(&mut self.command(world)),
            requests: world.up.log_since(mark),
        };
        assert_polite(&run);
        if !self.args.iter().any(|a| a == "--version-check") {
            assert_no_header_checks(&run);
        }
        run
    }

    /// The served files (everything but `.cvdmirror/`) and their SHA-256.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.root)
    }

    /// Version of the served `bytecode.cvd`.
    pub fn version(&self) -> Option<u32> {
        let bytes = std::fs::read(self.root.join(format!("{DB}.cvd"))).ok()?;
        Some(cvd::Header::parse(&bytes).ok()?.version)
    }

    /// Versions of the served cdiffs.
    pub fn cdiffs(&self) -> Vec<u32> {
        let mut versions: Vec<u32> = self
            .snapshot()
            .keys()
            .filter_map(|n| cvdmirror::sync::publish::cdiff_version(n, DB))
            .collect();
        versions.sort_unstable();
        versions
    }
}

/// Served file name → SHA-256.
pub type Snapshot = BTreeMap<String, [u8; 32]>;

/// Every file under `root` except the engine's private `.cvdmirror/`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if name == cvdmirror::sync::publish::PRIVATE_DIR {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            walk(root, &path, out);
        } else {
            out.insert(name, Sha256::digest(std::fs::read(&path).unwrap()).into());
        }
    }
}

/// Asserts the promise a failed pass makes: everything served before is
/// still served byte for byte, and anything new is a verified cdiff or a
/// signature file (which only help clients).
pub fn assert_preserved(before: &Snapshot, mirror: &Mirror, run: &Run) {
    let after = mirror.snapshot();
    for (name, hash) in before {
        assert_eq!(
            after.get(name),
            Some(hash),
            "{name} was served before the failed pass and changed or vanished\n{run}"
        );
    }
    for name in after.keys().filter(|n| !before.contains_key(*n)) {
        assert!(
            check_file(&mirror.root, name).is_ok(),
            "new file {name} after a failed pass does not verify: {:?}\n{run}",
            check_file(&mirror.root, name)
        );
        assert!(
            name.ends_with(".cdiff") || name.ends_with(".sign"),
            "a failed pass published {name}\n{run}"
        );
    }
}

/// Checks one served file: CVDs and cdiffs verify with the test keys,
/// signature files look like ones; nothing else may be in a served root.
pub fn check_file(root: &Path, name: &str) -> Result<(), String> {
    let path = root.join(name);
    if name == format!("{DB}.cvd") {
        // Either signature may carry a CVD: the legacy one, or its .sign.
        let expected = Expected::cvd(DB).header_signature(HeaderSignature::Reported);
        let verified =
            cvd::verify_file(&path, &expected, &trusted()).map_err(|e| format!("{name}: {e}"))?;
        if verified.legacy == Legacy::Verified {
            return Ok(());
        }
        let sign_name = cvd_sign_name(DB, verified.header.version);
        sign_verifier()
            .verify_file(&path, &root.join(&sign_name), SystemTime::now())
            .map_err(|e| format!("{name} has no legacy signature and {sign_name}: {e}"))?
            .map(|_| ())
            .map_err(|e| format!("{name} has no legacy signature and {sign_name} fails: {e}"))
    } else if let Some(v) = cvdmirror::sync::publish::cdiff_version(name, DB) {
        cvd::verify_cdiff_file(&path, Some(v), &trusted())
            .map(|_| ())
            .map_err(|e| format!("{name}: {e}"))
    } else if let Some(signed) = name.strip_suffix(".sign") {
        // A cdiff's .sign, or the current CVD's, must verify over it; a
        // replaced CVD's (kept for a grace period) must at least be one,
        // and so must a cdiff's whose cdiff is not there (yet): a .sign is
        // renamed into place before its file, so a crash between the two
        // renames leaves the .sign, which the next pass completes.
        let orphan = !root.join(signed).exists();
        let signed = match cvdmirror::sync::publish::cvd_sign_version(name, DB) {
            Some(v) if served_cvd_version(root) == Some(v) => format!("{DB}.cvd"),
            _ if orphan => {
                let text = std::fs::read(&path).map_err(|e| format!("{name}: {e}"))?;
                return if text.starts_with(SIGN_MAGIC.as_bytes()) {
                    Ok(())
                } else {
                    Err(format!("{name} is not a signature file"))
                };
            }
            Some(_) => {
                let text = std::fs::read(&path).map_err(|e| format!("{name}: {e}"))?;
                return if text.starts_with(SIGN_MAGIC.as_bytes()) {
                    Ok(())
                } else {
                    Err(format!("{name} is not a signature file"))
                };
            }
            None => signed.to_owned(),
        };
        sign_verifier()
            .verify_file(&root.join(&signed), &path, SystemTime::now())
            .map_err(|e| format!("{name}: {e}"))?
            .map(|_| ())
            .map_err(|e| format!("{name} does not verify over {signed}: {e}"))
    } else {
        Err(format!("unexpected file {name} in the served root"))
    }
}

fn served_cvd_version(root: &Path) -> Option<u32> {
    let bytes = std::fs::read(root.join(format!("{DB}.cvd"))).ok()?;
    Some(cvd::Header::parse(&bytes).ok()?.version)
}

/// The served-set invariant: every file verifies (no partial or temporary
/// file), a CVD newer than `base` comes with every cdiff after `base`, and
/// in a mirror of an upstream with `.sign` files (any is served) every
/// served CVD and non-empty cdiff has its `.sign`.
pub fn check_served(root: &Path, base: Option<u32>) -> Result<Option<u32>, String> {
    let files = snapshot(root);
    for name in files.keys() {
        check_file(root, name)?;
    }
    if files.keys().any(|n| n.ends_with(".sign")) {
        for name in files.keys() {
            let sign_name = if cvdmirror::sync::publish::cdiff_version(name, DB).is_some() {
                if std::fs::metadata(root.join(name)).map_or(0, |m| m.len()) == 0 {
                    continue;
                }
                format!("{name}.sign")
            } else if *name == format!("{DB}.cvd") {
                match served_cvd_version(root) {
                    Some(v) => cvd_sign_name(DB, v),
                    None => continue,
                }
            } else {
                continue;
            };
            if !files.contains_key(&sign_name) {
                return Err(format!("{name} is served without {sign_name}"));
            }
        }
    }
    let version = match std::fs::read(root.join(format!("{DB}.cvd"))) {
        Ok(bytes) => Some(
            cvd::Header::parse(&bytes)
                .map_err(|e| e.to_string())?
                .version,
        ),
        Err(_) => None,
    };
    if let (Some(base), Some(v)) = (base, version) {
        for n in base + 1..=v {
            if !files.contains_key(&cdiff_name(n)) {
                return Err(format!(
                    "{DB}.cvd is at {v} but {} is missing: a client at {base} cannot patch",
                    cdiff_name(n)
                ));
            }
        }
    }
    Ok(version)
}

/// Etiquette every run must keep, whatever else it tests: a versioned
/// `cvdmirror/` User-Agent on every request, and no CVD header checks
/// (`Range: bytes=0-511`) in DNS mode.
pub fn assert_polite(run: &Run) {
    for r in &run.requests {
        let ua = r.header("user-agent").unwrap_or("");
        assert!(
            ua.starts_with("cvdmirror/") && ua.len() > "cvdmirror/".len(),
            "request without a versioned cvdmirror User-Agent: {r}\n{run}"
        );
    }
}

/// Asserts DNS mode made no header check.
pub fn assert_no_header_checks(run: &Run) {
    for r in &run.requests {
        assert_ne!(
            r.header("range"),
            Some("bytes=0-511"),
            "header check in DNS mode: {r}\n{run}"
        );
    }
}

/// Asserts no file was requested more than once.
pub fn assert_each_file_once(run: &Run) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &run.requests {
        *counts.entry(r.file()).or_default() += 1;
    }
    for (file, n) in counts {
        assert!(n <= 1, "{file} requested {n} times in one pass\n{run}");
    }
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits (really: cool-downs are wall-clock) until the Unix time is past `t`.
pub fn wait_until_unix(t: u64) {
    while unix_now() <= t {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A healthy world and mirror: generated `bytecode` 271 upstream with
/// cdiffs 269..=271, synced once into a fresh mirror.
pub fn healthy() -> (World, Mirror) {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let mirror = Mirror::new();
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(mirror.version(), Some(271), "{run}");
    assert_eq!(mirror.cdiffs(), vec![269, 270, 271], "{run}");
    check_served(&mirror.root, None).unwrap();
    (world, mirror)
}

/// The first line of `<db>.info` in a CVD (a gzip'd tar after the header).
pub fn info_first_line(cvd: &[u8]) -> String {
    let gz = flate2::read::GzDecoder::new(&cvd[HEADER_LEN..]);
    let mut archive = tar::Archive::new(gz);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == format!("{DB}.info") {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            return text.lines().next().unwrap().to_owned();
        }
    }
    panic!("no {DB}.info in the CVD");
}

/// A release after the genuine `bytecode-339.cvd` (340, then each
/// [`Release::next`]), as Talos would make it: a cdiff from the version
/// before (it rewrites the first line of `bytecode.info` to the new header
/// line, from which freshclam builds the new `.cld`) and a whole CVD, both
/// signed with the test keys.
pub struct Release {
    /// The spec of the release (whose header line the cdiff writes).
    pub spec: DbSpec,
    /// `bytecode-N.cdiff`.
    pub cdiff: Vec<u8>,
    /// `bytecode.cvd` at N.
    pub cvd: Vec<u8>,
}

/// Release 340, after the genuine 339.
pub fn release_340() -> Release {
    let genuine = super::fixture("bytecode-339.cvd");
    let h339 = Header::parse(&genuine).unwrap();
    // The 339 `.info` starts with the 339 header line, md5 and dsig `X`.
    let old = info_first_line(&genuine);
    assert_eq!(
        old,
        format!(
            "ClamAV-VDB:{}:339:{}:{}:X:X:{}:{}",
            h339.built, h339.signatures, h339.flevel, h339.builder, h339.stime
        )
    );
    // Later than 339, or the header check (If-Modified-Since: the local
    // stime) would be answered 304 and the client would stay at 339.
    let spec = DbSpec::new(DB, 340)
        .stime(h339.stime + 3_600)
        .signatures(h339.signatures)
        .flevel(h339.flevel);
    release_over(&old, spec)
}

impl Release {
    /// The release after this one, made the same way: its cdiff rewrites
    /// this release's header line in `bytecode.info`.
    pub fn next(&self) -> Release {
        let spec = DbSpec::new(DB, self.spec.version + 1)
            .stime(self.spec.stime + 3_600)
            .signatures(self.spec.signatures)
            .flevel(self.spec.flevel);
        release_over(&self.spec.header_line(), spec)
    }
}

/// The release of `spec` for a client whose `bytecode.info` starts with
/// `old`.
fn release_over(old: &str, spec: DbSpec) -> Release {
    // `XCHG <line> <orig> <new>`: <orig> is one word, matched as a prefix
    // of the line; <new> is the rest of the command line. freshclam then
    // builds `bytecode.cld` with `bytecode.info`'s first line as its header.
    let orig = old.split(' ').next().unwrap();
    let script = format!(
        "OPEN {DB}.info\nXCHG 1 {orig} {}\nCLOSE\n",
        spec.header_line()
    );
    let cdiff = build::cdiff_from_script(spec.version, script.as_bytes(), &keys().cdiff).unwrap();
    let cvd = build::cvd(&spec, keys()).unwrap();
    Release { spec, cdiff, cvd }
}
