//! ClamAV 1.5.3's own freshclam and sigtool against what cvdmirror
//! publishes: FIPS-mode clients (`FIPSCryptoHashLimits yes`) accept a CVD
//! only on a valid ClamAV 1.5 `.sign` (detached PKCS#7, `#clamsign-1.0`), so
//! these tests prove that the `.sign` files `cvdmirror sync` verifies and
//! publishes are the ones a real 1.5 client can use, whole CVD and cdiff,
//! and that a client refuses the update when they are damaged or missing.
//! Debian's freshclam 1.4 must still update from the same root.
//!
//! The `.sign` files are made with the shared test PKI, whose root the
//! mirror trusts (`--sign-root`) and the client finds in its certificate
//! directory (`CVDCertsDirectory` and `CVD_CERTS_DIR`). freshclam trusts
//! only ClamAV's official *legacy* keys, but with a valid `.sign` it skips
//! the legacy header signature. It cannot skip the `DSIG:` line of the
//! `<db>.info` inside the database, which libclamav checks with the
//! official info key whenever it loads one (`cli_loadinfo`). Hence:
//! - whole CVDs are the genuine fixtures (`bytecode-339.cvd`), published
//!   with a `.sign` made by the test PKI (a `.sign` can sign any bytes);
//! - the cdiff (no genuine one exists) is built here: it rewrites the first
//!   line of the genuine 339's `bytecode.info` to the 340 header line, from
//!   which freshclam builds the new `.cld`. That `.info` can no longer carry
//!   an official DSIG, so that one update runs with `TestDatabases no`
//!   (checked: with `yes` it fails exactly there).
//!
//! Needs ClamAV 1.5.3 built by `scripts/build-clamav15` in
//! `$CVDMIRROR_CLAMAV15` (default `/var/cache/cvdmirror-test/clamav-1.5.3`)
//! and Debian's freshclam (`scripts/install-test-deps`); fails, never
//! skips, without them. See docs/testing-freshclam.md.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cvdmirror::cvd::{HEADER_LEN, Header};

use crate::support::access_log::LogLine;
use crate::support::clamav::{clamav15_prefix, sigtool15_verify};
use crate::support::freshclam::{Client, Mode, Run};
use crate::support::world::*;
use crate::support::{self, TestServer};

/// The genuine fixture every test starts from.
const GENUINE: &str = "bytecode-339.cvd";

/// [`TestServer::access_log_until`] a request for `path`.
fn log_until_path(server: &TestServer, mark: usize, path: &str) -> Vec<LogLine> {
    server.access_log_until(mark, |a| a.path == path)
}

/// Asserts that `log` shows `path` downloaded exactly once, a 200 of
/// `size` bytes (header checks aside: a 206 of 512 bytes or a 304), and
/// asked for only by clients whose User-Agent starts with `agent`.
fn assert_one_download(log: &[LogLine], path: &str, size: usize, agent: &str) {
    let hits: Vec<&LogLine> = log.iter().filter(|a| a.path == path).collect();
    let downloads: Vec<&&LogLine> = hits.iter().filter(|a| !is_header_check(a)).collect();
    assert!(
        downloads.len() == 1
            && downloads[0].status == 200
            && downloads[0].bytes == size as u64
            && hits.iter().all(|a| a.user_agent.starts_with(agent)),
        "wanted one 200 of {size} bytes for {path} to {agent}: {log:#?}"
    );
}

fn is_header_check(a: &LogLine) -> bool {
    (a.status == 206 && a.bytes == HEADER_LEN as u64) || a.status == 304
}

/// The whole bytecode.cvd body was not sent: every request for it was a
/// header check (a 206 of 512 bytes or a 304).
fn assert_no_whole_cvd(log: &[LogLine]) {
    for a in log.iter().filter(|a| a.path == "/bytecode.cvd") {
        assert!(
            is_header_check(a),
            "bytecode.cvd was downloaded, not only header-checked: {log:#?}"
        );
    }
}

/// Asserts ClamAV 1.5.3's `sigtool --verify` refuses `file` with the roots
/// in `certs`, saying `why`.
fn assert_sigtool_refuses(file: &Path, certs: &Path, why: &str, what: &str) {
    let verify = sigtool15_verify(file, certs);
    assert!(
        !verify.ok()
            && !verify.stdout.contains("Successfully verified")
            && verify.output().contains(why),
        "sigtool verified {what}: {}{}",
        verify.stdout,
        verify.stderr
    );
}

/// A world whose upstream has the genuine 339 with a test-PKI `.sign`, a
/// mirror (`--signatures both`: pre-1.5 and FIPS clients from one root)
/// synced from it, and `cvdmirror serve` serving the mirror's root.
struct Setup {
    world: World,
    server: TestServer,
    mirror: Mirror,
}

fn mirror_at_339() -> Setup {
    let world = World::new();
    let genuine = support::fixture(GENUINE);
    // As `World::put_cvd`, keeping the .sign (signing time varies).
    let upstream_sign = sign(&genuine);
    world.up.put("bytecode-339.cvd.sign", &upstream_sign);
    world.up.put("bytecode.cvd", &genuine);
    world.advertise(DB, 339);
    let server = TestServer::builder().start();
    let mirror = Mirror::at(
        tempfile::tempdir().unwrap(),
        server.root.clone(),
        FAST_CONFIG,
    )
    .arg("--signatures")
    .arg("both");
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(mirror.version(), Some(339), "{run}");
    assert!(
        std::fs::read(server.root.join("bytecode.cvd")).unwrap() == genuine,
        "the mirror does not serve the genuine 339\n{run}"
    );
    assert!(
        std::fs::read(server.root.join("bytecode-339.cvd.sign")).unwrap() == upstream_sign,
        "the mirror does not serve upstream's .sign\n{run}"
    );
    check_served(&mirror.root, None).unwrap();
    Setup {
        world,
        server,
        mirror,
    }
}

/// Release 340 upstream, as Talos would: a cdiff turning the genuine 339
/// into 340 and a whole CVD 340, each with its `.sign`. Returns the spec
/// of 340 (whose header line the cdiff writes into `bytecode.info`).
fn release_340_upstream(world: &World) -> cvdmirror::cvd::build::DbSpec {
    let release = release_340();
    world.put_signed(&cdiff_name(340), &release.cdiff);
    world.put_cvd(&release.cvd);
    world.advertise(DB, 340);
    release.spec
}

#[test]
fn fips_client_updates_by_whole_cvd_on_the_mirrors_sign() {
    let Setup { server, mirror, .. } = mirror_at_339();
    let genuine = support::fixture(GENUINE);
    let served_sign = std::fs::read(server.root.join("bytecode-339.cvd.sign")).unwrap();
    let client = Client::clamav15(&server.url(""), Mode::PrivateMirror);

    let run = client.run();
    run.assert_ok()
        .assert_says("CVD verified successfully with detached signature file")
        .assert_says(&format!("bytecode.cvd\" signed by {}", pki().signer_name()))
        .assert_says("bytecode.cvd updated (version: 339");
    assert!(
        client.read("bytecode.cvd") == genuine,
        "the client's bytecode.cvd differs\n{run}"
    );
    assert!(
        client.read("bytecode-339.cvd.sign") == served_sign,
        "the client's bytecode-339.cvd.sign differs\n{run}"
    );
    assert_eq!(
        client.files(),
        ["bytecode-339.cvd.sign", "bytecode.cvd"],
        "{run}"
    );
    let log = log_until_path(&server, 0, "/bytecode-339.cvd.sign");
    assert_one_download(&log, "/bytecode.cvd", genuine.len(), "ClamAV/1.5.3");
    assert_one_download(
        &log,
        "/bytecode-339.cvd.sign",
        served_sign.len(),
        "ClamAV/1.5.3",
    );

    // sigtool 1.5.3 accepts what the mirror publishes, and only with the
    // root that signed it.
    let verify = sigtool15_verify(&mirror.root.join("bytecode.cvd"), &client.certs());
    assert!(
        verify.status.success()
            && verify.stdout.contains(&format!(
                "Successfully verified file '{}' with signature '{}', signed by '{}'",
                mirror.root.join("bytecode.cvd").display(),
                mirror.root.join("bytecode-339.cvd.sign").display(),
                pki().signer_name()
            )),
        "sigtool --verify: {}\n{}{}",
        verify.status,
        verify.stdout,
        verify.stderr
    );
    // The build's compiled-in certs dir: ClamAV's production root only.
    let official = clamav15_prefix().join("etc/certs");
    assert_sigtool_refuses(
        &mirror.root.join("bytecode.cvd"),
        &official,
        "unable to get local issuer certificate",
        "a test-PKI .sign with only the official root",
    );
}

#[test]
fn fips_client_updates_by_cdiff_on_the_mirrors_sign() {
    let Setup {
        world,
        server,
        mirror,
    } = mirror_at_339();
    // DatabaseMirror: a PrivateMirror client never asks for cdiffs.
    let client = Client::clamav15(&server.url(""), Mode::DatabaseMirror);
    let run = client.run();
    run.assert_ok()
        .assert_says("CVD verified successfully with detached signature file");
    assert_eq!(
        client.read("bytecode.cvd"),
        support::fixture(GENUINE),
        "{run}"
    );
    assert_eq!(
        client.files(),
        ["bytecode-339.cvd.sign", "bytecode.cvd"],
        "{run}"
    );

    let spec = release_340_upstream(&world);
    let sync = mirror.sync(&world);
    sync.assert_ok();
    assert_eq!(mirror.version(), Some(340), "{sync}");
    check_served(&mirror.root, Some(339)).unwrap();
    let cdiff = std::fs::read(mirror.root.join("bytecode-340.cdiff")).unwrap();
    let cdiff_sign = std::fs::read(mirror.root.join("bytecode-340.cdiff.sign")).unwrap();

    // With TestDatabases yes the patched database fails its test load: the
    // cdiff applied (its .sign verified), but the rewritten bytecode.info no
    // longer matches its official DSIG, and no key we hold can re-sign it.
    let mark = server.access_log_entries().len();
    let tested = client.run();
    tested
        .assert_failed()
        .assert_says("cdiff_apply: external signature verified")
        .assert_says("cli_loadinfo: Incorrect digital signature")
        .assert_says("Database test FAILED");
    log_until_path(&server, mark, "/bytecode-340.cdiff.sign");
    assert_eq!(
        client.files(),
        ["bytecode-339.cvd.sign", "bytecode.cvd"],
        "{tested}"
    );

    // Hence TestDatabases no: the update itself is freshclam's own.
    let mark = server.access_log_entries().len();
    let run = client.run_with(&["TestDatabases no"]);
    run.assert_ok()
        .assert_says(&format!(
            "cdiff_apply: external signature verified. Signed by: {}",
            pki().signer_name()
        ))
        .assert_says("bytecode.cld updated (version: 340")
        .assert_never_says("Incremental update failed");
    let log = log_until_path(&server, mark, "/bytecode-340.cdiff.sign");
    assert_one_download(&log, "/bytecode-340.cdiff", cdiff.len(), "ClamAV/1.5.3");
    assert_one_download(
        &log,
        "/bytecode-340.cdiff.sign",
        cdiff_sign.len(),
        "ClamAV/1.5.3",
    );
    assert_no_whole_cvd(&log);
    // A CLD carries no .sign; the old CVD and its .sign are gone.
    assert_eq!(client.files(), ["bytecode.cld"], "{run}");
    let cld = client.read("bytecode.cld");
    let header = Header::parse(&cld).unwrap();
    assert_eq!(
        (header.version, header.builder.as_str()),
        (340, "cvdmirror"),
        "{run}"
    );
    assert_eq!(
        String::from_utf8_lossy(&cld[..HEADER_LEN]).trim_end(),
        spec.header_line(),
        "{run}"
    );
}

/// A copy of `root`'s served files with the `.sign` of the CVD at 339
/// replaced (`Some`) or removed (`None`), served by its own server.
fn serve_copy(root: &Path, sign_339: Option<&[u8]>) -> TestServer {
    let mut builder = TestServer::builder();
    for name in snapshot(root).keys() {
        let bytes = if name == "bytecode-339.cvd.sign" {
            match sign_339 {
                Some(bytes) => bytes.to_vec(),
                None => continue,
            }
        } else {
            std::fs::read(root.join(name)).unwrap()
        };
        builder = builder.file(name, &bytes);
    }
    builder.start()
}

/// `sign` with one base64 character of its signature line changed, near
/// the end of the DER, i.e. inside the RSA signature value: it still
/// parses, and no longer verifies.
fn tamper(sign: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(sign.to_vec()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = &mut lines[1];
    assert!(line.starts_with("230::pkcs7-pem:"), "{text}");
    // Before the last four-character group, so never a '=' pad.
    let at = line.len() - 8;
    let new = if line.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    line.replace_range(at..=at, new);
    format!("{}\n", lines.join("\n")).into_bytes()
}

#[test]
fn fips_client_refuses_a_damaged_or_missing_sign() {
    // `_server` keeps the mirror's root (its directory) alive.
    let Setup {
        server: _server,
        mirror,
        ..
    } = mirror_at_339();
    let genuine = support::fixture(GENUINE);
    let good = std::fs::read(mirror.root.join("bytecode-339.cvd.sign")).unwrap();
    let tampered = tamper(&good);
    let other = sign(&support::fixture("bytecode-268.cvd"));
    for (what, bad) in [("tampered", &tampered), ("of other content", &other)] {
        // What cvdmirror's own verifier makes of it: present but invalid,
        // the kind of .sign that makes ClamAV 1.5 refuse the file.
        let verdict = sign_verifier().verify(&genuine, bad, SystemTime::now());
        assert!(
            verdict.as_ref().is_err_and(|e| e.is_invalid()),
            "a .sign {what} should be invalid, got {verdict:?}"
        );
        let server = serve_copy(&mirror.root, Some(bad));
        // Refused in FIPS mode and, an invalid .sign having no legacy
        // fallback, outside it too.
        for fips in [true, false] {
            let mut client = Client::clamav15(&server.url(""), Mode::PrivateMirror);
            if !fips {
                client = client.without_fips();
            }
            let mark = server.access_log_entries().len();
            let run = client.run();
            run.assert_failed()
                .assert_says("Detached CVD signature is invalid")
                .assert_says("Invalid or corrupted CVD/CLD database");
            assert!(
                client.files().is_empty(),
                "a .sign {what} (FIPS {fips}): the client kept files\n{run}"
            );
            // It did download both, and refused them.
            let log = log_until_path(&server, mark, "/bytecode-339.cvd.sign");
            assert_one_download(&log, "/bytecode.cvd", genuine.len(), "ClamAV/1.5.3");
            assert_one_download(&log, "/bytecode-339.cvd.sign", bad.len(), "ClamAV/1.5.3");
        }
        assert_sigtool_refuses(
            &server.root.join("bytecode.cvd"),
            &pki_certs(),
            "verify: Failed to verify file",
            &format!("a .sign {what}"),
        );
    }

    // No .sign at all: FIPS mode has no legacy fallback...
    let server = serve_copy(&mirror.root, None);
    let client = Client::clamav15(&server.url(""), Mode::PrivateMirror);
    let run = client.run();
    run.assert_failed()
        .assert_says("No external .sign digital signature file for bytecode-339")
        .assert_says(
            "Unable to verify CVD with detached signature file and MD5 verification is disabled",
        )
        .assert_says("Invalid or corrupted CVD/CLD database");
    assert!(client.files().is_empty(), "{run}");
    let log = log_until_path(&server, 0, "/bytecode-339.cvd.sign");
    assert_one_download(&log, "/bytecode.cvd", genuine.len(), "ClamAV/1.5.3");
    // ...which is what refused it: the same client without FIPS limits
    // takes the genuine CVD on its legacy signature.
    let client = client.without_fips();
    let mark = server.access_log_entries().len();
    takes_genuine_339(&client, "without FIPS");
    let log = log_until_path(&server, mark, "/bytecode-339.cvd.sign");
    assert!(
        log.iter()
            .filter(|a| a.path == "/bytecode-339.cvd.sign")
            .all(|a| a.status == 404),
        "{log:#?}"
    );
}

/// Runs `client`, which must update to the genuine 339, byte for byte.
fn takes_genuine_339(client: &Client, what: &str) -> Run {
    let run = client.run();
    run.assert_ok()
        .assert_says("bytecode.cvd updated (version: 339");
    assert!(
        client.read("bytecode.cvd") == support::fixture(GENUINE),
        "the client's bytecode.cvd differs\n{what}\n{run}"
    );
    run
}

/// A certs dir holding the test PKI's root.
fn pki_certs() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test-root.crt"), pki().root_pem()).unwrap();
        dir
    });
    dir.path().to_owned()
}

#[test]
fn debian_freshclam_14_still_updates_from_a_root_with_signs() {
    let Setup { server, .. } = mirror_at_339();
    let genuine = support::fixture(GENUINE);
    assert!(server.root.join("bytecode-339.cvd.sign").is_file());
    for mode in [Mode::PrivateMirror, Mode::DatabaseMirror] {
        let client = Client::new(&server.url(""), mode, &["MaxAttempts 1"]);
        let mark = server.access_log_entries().len();
        let run = takes_genuine_339(&client, &format!("{mode:?}"));
        assert_eq!(client.files(), ["bytecode.cvd"], "{mode:?}\n{run}");
        let log = server.access_log_until(mark, |a| a.path == "/bytecode.cvd" && a.status == 200);
        assert_one_download(&log, "/bytecode.cvd", genuine.len(), "ClamAV/1.4");
        // ClamAV 1.4 does not know .sign files.
        assert!(
            log.iter().all(|a| !a.path.ends_with(".sign")),
            "{mode:?}: {log:#?}"
        );
    }
}
