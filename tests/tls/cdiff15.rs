//! A cdiff applied by a real client fetched over HTTPS: ClamAV 1.5.3's
//! freshclam in FIPS mode, trusting the test CA for TLS and the test `.sign`
//! PKI for the files, updates a genuine `bytecode.cvd` 339 to 340 with
//! `bytecode-340.cdiff` and its `.sign`, all over HTTPS. Debian's 1.4
//! accepts only cdiffs signed with ClamAV's key, of which no genuine one
//! exists; 1.5.3 accepts one on its `.sign`. As in tests/sync/freshclam15.rs,
//! the cdiff rewrites the first line of `bytecode.info` (so the update runs
//! with `TestDatabases no`: the official DSIG of that file no longer
//! matches). Needs ClamAV 1.5.3 from scripts/build-clamav15 in
//! `$CVDMIRROR_CLAMAV15` (default `/var/cache/cvdmirror-test/clamav-1.5.3`).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use cvdmirror::cvd::build::sign::TestPki as SignPki;
use cvdmirror::cvd::build::{self, DbSpec};
use cvdmirror::cvd::{HEADER_LEN, Header, testkeys};

use super::util::{Pki, https_addr, tls_args};
use crate::access_log;
use crate::support::{self, TestServer};

fn clamav15_freshclam() -> PathBuf {
    let prefix = std::env::var_os("CVDMIRROR_CLAMAV15")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/cvdmirror-test/clamav-1.5.3"));
    let bin = prefix.join("bin/freshclam");
    assert!(
        bin.is_file(),
        "ClamAV 1.5.3 freshclam not found at {}: build it with scripts/build-clamav15",
        bin.display()
    );
    bin
}

/// The first line of `bytecode.info` in a CVD (a gzip'd tar after the header).
fn info_first_line(cvd: &[u8]) -> String {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&cvd[HEADER_LEN..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let block = &tar[at..at + 512];
        let name = String::from_utf8_lossy(&block[..100])
            .trim_end_matches('\0')
            .to_owned();
        let size_field = String::from_utf8_lossy(&block[124..136]).into_owned();
        let size = usize::from_str_radix(size_field.trim_matches(['\0', ' ']), 8).unwrap();
        if name == "bytecode.info" {
            let text = String::from_utf8_lossy(&tar[at + 512..at + 512 + size]).into_owned();
            return text.lines().next().unwrap().to_owned();
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    panic!("no bytecode.info in the CVD");
}

#[test]
fn clamav_15_applies_a_cdiff_fetched_over_https() {
    let bin = clamav15_freshclam();
    let signs = SignPki::shared().unwrap();
    let keys = testkeys::signing_keys();
    let genuine = support::fixture("bytecode-339.cvd");
    let h339 = Header::parse(&genuine).unwrap();
    // Release 340: a cdiff from the genuine 339, and the whole CVD whose
    // header tells the client that 340 exists.
    let spec = DbSpec::new("bytecode", 340)
        .stime(h339.stime + 3_600)
        .signatures(h339.signatures)
        .flevel(h339.flevel);
    let old = info_first_line(&genuine);
    let script = format!(
        "OPEN bytecode.info\nXCHG 1 {} {}\nCLOSE\n",
        old.split(' ').next().unwrap(),
        spec.header_line()
    );
    let cdiff = build::cdiff_from_script(340, script.as_bytes(), &keys.cdiff).unwrap();
    let cvd340 = build::cvd(&spec, &keys).unwrap();

    let pki = Pki::new();
    let (cert, key) = pki.server("server", "localhost");
    let server = TestServer::builder()
        .file("bytecode.cvd", &cvd340)
        .file("bytecode-340.cvd.sign", &signs.sign(&cvd340).unwrap())
        .file("bytecode-340.cdiff", &cdiff)
        .file("bytecode-340.cdiff.sign", &signs.sign(&cdiff).unwrap())
        .args(tls_args(&cert, &key))
        .start();
    let url = format!("https://localhost:{}", https_addr(&server).port());

    // The client holds the genuine 339 with its .sign, and trusts the
    // `.sign` PKI's root.
    let dir = tempfile::tempdir().unwrap();
    let (db, certs) = (dir.path().join("db"), dir.path().join("certs"));
    std::fs::create_dir(&db).unwrap();
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(db.join("bytecode.cvd"), &genuine).unwrap();
    std::fs::write(
        db.join("bytecode-339.cvd.sign"),
        signs.sign(&genuine).unwrap(),
    )
    .unwrap();
    std::fs::write(certs.join("test-root.crt"), signs.root_pem()).unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let conf = dir.path().join("freshclam.conf");
    std::fs::write(
        &conf,
        format!(
            "DatabaseDirectory {}\nDatabaseOwner {}\nLogVerbose yes\nForeground yes\n\
             ConnectTimeout 10\nMaxAttempts 1\nDatabaseMirror {url}\nScriptedUpdates yes\n\
             CVDCertsDirectory {}\nFIPSCryptoHashLimits yes\nTestDatabases no\n",
            db.display(),
            user.trim(),
            certs.display()
        ),
    )
    .unwrap();
    let out = Command::new(&bin)
        .arg(format!("--config-file={}", conf.display()))
        .args(["--update-db=bytecode", "--no-dns", "--debug"])
        .env("CVD_CERTS_DIR", &certs)
        .env("CURL_CA_BUNDLE", &pki.ca_file)
        .env("SSL_CERT_FILE", &pki.ca_file)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "freshclam 1.5.3 failed:\n{text}");
    for needle in [
        "SSL connection using TLSv1.3",
        "cdiff_apply: external signature verified",
        "bytecode.cld updated (version: 340",
    ] {
        assert!(
            text.contains(needle),
            "freshclam never said {needle:?}:\n{text}"
        );
    }
    assert!(!text.contains("Incremental update failed"), "{text}");
    let cld = std::fs::read(db.join("bytecode.cld")).unwrap();
    assert_eq!(Header::parse(&cld).unwrap().version, 340);

    // The mirror served the cdiff and its .sign over HTTPS, and no whole CVD.
    let log = server.access_log_containing("/bytecode-340.cdiff.sign");
    let entries: Vec<_> = log.lines().filter_map(access_log::parse).collect();
    for (path, len) in [
        ("/bytecode-340.cdiff", cdiff.len()),
        (
            "/bytecode-340.cdiff.sign",
            signs.sign(&cdiff).unwrap().len(),
        ),
    ] {
        assert!(
            entries.iter().any(|e| e.path == path
                && e.status == 200
                && (e.bytes as usize == len || path.ends_with(".sign"))),
            "{path} not served whole:\n{log}"
        );
    }
    assert!(
        !entries
            .iter()
            .any(|e| e.path == "/bytecode.cvd" && e.status == 200),
        "a whole CVD was downloaded:\n{log}"
    );
}
