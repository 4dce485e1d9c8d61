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

use cvdmirror::cvd::Header;

use super::util::{Pki, tls_args};
use crate::support::freshclam::{Client, Mode};
use crate::support::world::{release_340, sign};
use crate::support::{self, TestServer};

#[test]
fn clamav_15_applies_a_cdiff_fetched_over_https() {
    let genuine = support::fixture("bytecode-339.cvd");
    // Release 340: a cdiff from the genuine 339, and the whole CVD whose
    // header tells the client that 340 exists.
    let release = release_340();
    let (cdiff, cvd340) = (&release.cdiff, &release.cvd);

    let pki = Pki::new();
    let (cert, key) = pki.server("server", "localhost");
    let server = TestServer::builder()
        .file("bytecode.cvd", cvd340)
        .file("bytecode-340.cvd.sign", &sign(cvd340))
        .file("bytecode-340.cdiff", cdiff)
        .file("bytecode-340.cdiff.sign", &sign(cdiff))
        .args(tls_args(&cert, &key))
        .start();
    let url = format!("https://localhost:{}", server.https_addr().port());

    // The client holds the genuine 339 with its .sign, and trusts the
    // `.sign` PKI's root.
    let client = Client::clamav15(&url, Mode::DatabaseMirror).trusting(&pki.ca_file);
    client.install("bytecode.cvd", &genuine);
    client.install("bytecode-339.cvd.sign", &sign(&genuine));
    let run = client.run_with(&["TestDatabases no"]);
    run.assert_ok()
        .assert_says("SSL connection using TLSv1.3")
        .assert_says("cdiff_apply: external signature verified")
        .assert_says("bytecode.cld updated (version: 340")
        .assert_never_says("Incremental update failed");
    assert_eq!(
        Header::parse(&client.read("bytecode.cld")).unwrap().version,
        340
    );

    // The mirror served the cdiff and its .sign over HTTPS, and no whole CVD.
    server.access_log_containing("/bytecode-340.cdiff.sign");
    let entries = server.access_log_entries();
    let log = crate::support::freshclam::fmt_entries(&entries);
    for (path, len) in [
        ("/bytecode-340.cdiff", cdiff.len()),
        ("/bytecode-340.cdiff.sign", sign(cdiff).len()),
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
