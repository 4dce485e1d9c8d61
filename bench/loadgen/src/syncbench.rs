//! Helper for `bench/sync.sh` (cvdmirror sync vs Debian's cvdupdate).
//!
//! - `fixtures`: writes a signed database history with the test keys
//!   (`cvdmirror::cvd::build`): the CVDs of the two newest versions and a
//!   chain of cdiffs of realistic size, plus the `--trusted-key` values a
//!   mirror needs to accept them; and, as upstream publishes since ClamAV
//!   1.5, each file's detached `.sign` (`#clamsign-1.0`, PKCS#7) made by a
//!   throw-away certificate chain generated for this fixture set
//!   (`cvdmirror::cvd::build::sign::TestPki`), whose root is written
//!   beside them for `--sign-root`.
//! - `dns`: answers the version TXT record (`current.cvd.clamav.net` for
//!   cvdupdate, which always asks that name on port 53) with the text of a
//!   file, re-read whenever it changes, until SIGTERM/SIGINT or a time cap.
//!
//! Only loopback addresses are served; every loop is bounded.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use cvdmirror::cvd::build::sign::TestPki;
use cvdmirror::cvd::build::{self, DbSpec};
use cvdmirror::cvd::testkeys::{self, SigningKeys};
use cvdmirror::cvd::{ExtraKey, KeyRole};
use cvdmirror::dns::test_server::{Behaviour, TxtServer};
use tokio::time::Instant;

const USAGE: &str = "\
usage: cvdmirror-syncbench fixtures --out DIR [--db daily] [--version 27830] \\
           [--size 60000000] [--cdiffs 101] [--cdiff-bytes 30000]
       cvdmirror-syncbench dns --record-file FILE [--listen 127.0.0.1:53] \\
           [--name current.cvd.clamav.net] [--max-secs 7200]

fixtures writes <db>-<version>.cvd and <db>-<version-1>.cvd (each about
--size bytes), <db>-<v>.cdiff for the --cdiffs newest versions up to
--version (each about --cdiff-bytes), and trusted-keys (one --trusted-key
value per line), all signed with cvdmirror's test keys; next to each file
its ClamAV 1.5 detached signature (<db>-<v>.cvd.sign, <db>-<v>.cdiff.sign)
made by a certificate chain generated for this run, whose root certificate
is sign-root.pem (for `cvdmirror sync --sign-root`).
dns answers TXT queries for --name with the content of --record-file (first
line), re-read every 50 ms; prints `listening on ADDR` once it is bound.";

/// Polling interval of the record file.
const POLL: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("{USAGE}");
        return if args.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let mode = args.remove(0);
    let res = match mode.as_str() {
        "fixtures" => Flags::parse(&args).and_then(|f| fixtures(&f)),
        "dns" => Flags::parse(&args).and_then(|f| dns(&f)),
        other => Err(format!("unknown mode {other}\n{USAGE}")),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvdmirror-syncbench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--flag value` pairs.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag}\n{USAGE}"))?;
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            out.push((name.to_owned(), value.clone()));
        }
        Ok(Flags(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: bad number {v}")),
        }
    }

    fn check_known(&self, known: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("unknown flag --{n}\n{USAGE}")),
            None => Ok(()),
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A cdiff for `version` whose script adds signature lines until the signed
/// file is about `target` bytes (real daily cdiffs are tens of KB).
fn sized_cdiff(
    db: &str,
    version: u32,
    target: usize,
    keys: &SigningKeys,
) -> Result<Vec<u8>, String> {
    let make = |lines: u32| -> Result<Vec<u8>, String> {
        let mut script = format!("OPEN {db}.hdb\n");
        for j in 0..lines {
            let line = build::signature_line(db, 10_000_000 + version.wrapping_mul(4_096) + j);
            script.push_str("ADD ");
            script.push_str(&line);
            script.push('\n');
        }
        script.push_str("CLOSE\n");
        build::cdiff_from_script(version, script.as_bytes(), &keys.cdiff)
            .map_err(|e| format!("cdiff {version}: {e}"))
    };
    // Size is close to linear in the number of lines: one probe, one fit.
    let probe_lines = 256;
    let probe = make(probe_lines)?;
    if target <= probe.len() {
        return Ok(probe);
    }
    let per_line = probe.len() as f64 / f64::from(probe_lines);
    let lines = (target as f64 / per_line).round().clamp(1.0, 4_000.0) as u32;
    make(lines)
}

fn fixtures(flags: &Flags) -> Result<(), String> {
    flags.check_known(&["out", "db", "version", "size", "cdiffs", "cdiff-bytes"])?;
    let out = PathBuf::from(flags.get("out").ok_or("fixtures needs --out DIR")?);
    let db = flags.text("db", "daily");
    let version: u32 = flags.num("version", 27_830)?;
    let size: u64 = flags.num("size", 60_000_000)?;
    let cdiffs: u32 = flags.num("cdiffs", 101)?;
    let cdiff_bytes: usize = flags.num("cdiff-bytes", 30_000)?;
    if !(2..=10_000).contains(&cdiffs)
        || cdiffs >= version
        || size > 1 << 31
        || cdiff_bytes > 200_000
    {
        return Err("out of range: --cdiffs 2..10000 and < --version, --size <= 2 GiB, --cdiff-bytes <= 200000".into());
    }
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let keys = testkeys::signing_keys();
    let started = Instant::now();
    // One throw-away chain per fixture set: its root is trusted only by the
    // mirrors of this benchmark (`--sign-root`).
    let pki = TestPki::generate().map_err(|e| format!("sign PKI: {e}"))?;
    let sign = |name: &str, bytes: &[u8]| -> Result<usize, String> {
        let signature = pki.sign(bytes).map_err(|e| format!("{name}.sign: {e}"))?;
        write(&out.join(format!("{name}.sign")), &signature)?;
        Ok(signature.len())
    };
    for v in [version - 1, version] {
        // stime: one hour per version, ending about now, so nothing looks stale.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stime = now.saturating_sub(u64::from(version - v) * 3_600 + 600);
        let spec = DbSpec::new(&db, v)
            .signatures(2_000)
            .size(size)
            .stime(stime);
        let bytes = build::cvd(&spec, &keys).map_err(|e| format!("cvd {v}: {e}"))?;
        let name = format!("{db}-{v}.cvd");
        write(&out.join(&name), &bytes)?;
        let sign_bytes = sign(&name, &bytes)?;
        eprintln!(
            "{name}: {} bytes, {name}.sign: {sign_bytes} bytes",
            bytes.len()
        );
    }
    let (mut total, mut sign_total) = (0usize, 0usize);
    for v in version + 1 - cdiffs..=version {
        let bytes = sized_cdiff(&db, v, cdiff_bytes, &keys)?;
        total += bytes.len();
        let name = format!("{db}-{v}.cdiff");
        write(&out.join(&name), &bytes)?;
        sign_total += sign(&name, &bytes)?;
    }
    eprintln!(
        "{cdiffs} cdiffs {db}-{}..{db}-{version}: {total} bytes (mean {}), their .sign files {sign_total} bytes",
        version + 1 - cdiffs,
        total / cdiffs as usize
    );
    write(&out.join("sign-root.pem"), &pki.root_pem())?;
    let public = testkeys::public_keys();
    let mut lines = String::new();
    for role in [KeyRole::Cvd, KeyRole::Info, KeyRole::Cdiff] {
        for key in public.keys(role) {
            let entry = ExtraKey {
                role,
                key: key.clone(),
            };
            lines.push_str(&entry.to_string());
            lines.push('\n');
        }
    }
    write(&out.join("trusted-keys"), lines.as_bytes())?;
    eprintln!(
        "fixtures written to {} in {:.1?}",
        out.display(),
        started.elapsed()
    );
    Ok(())
}

fn read_record(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().next()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}

fn dns(flags: &Flags) -> Result<(), String> {
    flags.check_known(&["listen", "name", "record-file", "max-secs"])?;
    let listen: SocketAddr = flags
        .text("listen", "127.0.0.1:53")
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    if !listen.ip().is_loopback() {
        return Err(format!("--listen {listen}: only loopback addresses"));
    }
    let name = flags.text("name", "current.cvd.clamav.net");
    let file = PathBuf::from(
        flags
            .get("record-file")
            .ok_or("dns needs --record-file FILE")?,
    );
    let max = Duration::from_secs(flags.num("max-secs", 7_200u64)?.min(86_400));
    let first = read_record(&file).ok_or_else(|| format!("{}: no record in it", file.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let server = TxtServer::start_at(listen, &name, Behaviour::Txt(first.clone()))
            .await
            .map_err(|e| format!("cannot answer DNS on {listen}: {e}"))?;
        println!("listening on {} for {}", server.addr(), server.name());
        let mut current = first;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("SIGTERM handler: {e}"))?;
        let deadline = tokio::time::Instant::now() + max;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep_until(deadline) => {
                    eprintln!("cvdmirror-syncbench dns: time cap of {max:?} reached");
                    break;
                }
                () = tokio::time::sleep(POLL) => {
                    match read_record(&file) {
                        Some(record) if record != current => {
                            server.set_record(record.clone());
                            current = record;
                        }
                        _ => {}
                    }
                }
            }
        }
        drop(server);
        Ok::<(), String>(())
    })
}
