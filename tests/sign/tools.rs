//! The tools on their own: a `.sign` made by the fixtures' openssl-CLI
//! recipe (`make-test-pki.sh`) and one made by `sigtool --sign` verify and
//! look like ours, sigtool finds and accepts the `.sign` of a generated CVD
//! without legacy header signature, and a first line `#clamsign` (no `-`)
//! still crashes ClamAV 1.5.3, which we call unusable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use cvdmirror::cvd::build::sign::{LineOptions, SignFile, TestPki};
use cvdmirror::cvd::build::{self, DbSpec, LegacySignature};
use cvdmirror::cvd::sign::{SignRoots, SignVerifier, cvd_sign_name};

use super::corpus::{Case, Verdict, corpus_target, sigtool_verify};
use crate::support::clamav::{clamav15_bin, sigtool15_verify};
use crate::support::fixtures::sign_fixture_path as fixture_path;

/// Runs make-test-pki.sh on `target` with `workdir` as its WORKDIR.
fn run_recipe(script: &Path, target: &Path, workdir: &Path) {
    let out = Command::new("bash")
        .arg(script)
        .arg(target)
        .env("WORKDIR", workdir)
        .current_dir(target.parent().unwrap())
        .output()
        .expect("bash (and the openssl CLI) are needed to run make-test-pki.sh");
    assert!(
        out.status.success(),
        "make-test-pki.sh failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files of the PKI make-test-pki.sh generates (it generates none when
/// `signer.key` exists).
const RECIPE_PKI: [&str; 6] = [
    "root.key",
    "certs/test-root.crt",
    "int.key",
    "int.crt",
    "signer.key",
    "signer.crt",
];

/// make-test-pki.sh's PKI: three RSA-4096 keys take the openssl CLI
/// several seconds, so it is generated once per version of the script
/// under Cargo's per-target temporary directory, into a fresh directory
/// renamed into place whole (a run interrupted or raced never leaves half
/// a PKI there).
fn recipe_pki(script: &Path) -> PathBuf {
    let digest = openssl::sha::sha256(&std::fs::read(script).unwrap());
    let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let cache = tmp.join(format!("make-test-pki-{tag}"));
    if !RECIPE_PKI.iter().all(|f| cache.join(f).is_file()) {
        let fresh = tempfile::tempdir_in(tmp).unwrap();
        let target = fresh.path().join("target.bin");
        std::fs::write(&target, b"first run").unwrap();
        run_recipe(script, &target, &fresh.path().join("pki"));
        let _ = std::fs::remove_dir_all(&cache);
        // Another test process may have won the race: its PKI is as good.
        let _ = std::fs::rename(fresh.path().join("pki"), &cache);
    }
    cache
}

#[test]
fn a_sign_made_with_the_openssl_cli_recipe_verifies() {
    let script = fixture_path("make-test-pki.sh");
    let pki = recipe_pki(&script);
    // Sign in a WORKDIR of our own holding a copy of the PKI.
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("pki");
    std::fs::create_dir_all(workdir.join("certs")).unwrap();
    for file in RECIPE_PKI {
        std::fs::copy(pki.join(file), workdir.join(file)).unwrap();
    }
    let target = dir.path().join("target.bin");
    std::fs::write(&target, corpus_target()).unwrap();
    run_recipe(&script, &target, &workdir);
    let sign = std::fs::read(dir.path().join("target.bin.sign")).unwrap();
    let root = workdir.join("certs/test-root.crt");
    let mut roots = SignRoots::none();
    roots.add_file(&root).unwrap();
    let verifier = SignVerifier::new(roots);
    let by = verifier
        .verify(&corpus_target(), &sign, SystemTime::now())
        .unwrap();
    assert_eq!(by.signer, "Example TEST CVD Signing Cert");
    assert_eq!(by.issuer, "Example TEST Intermediate CA");
    // ... and not over other content, nor with another root.
    assert!(
        verifier
            .verify(b"other", &sign, SystemTime::now())
            .unwrap_err()
            .is_invalid()
    );
    let other = SignVerifier::new(TestPki::shared().unwrap().roots().unwrap());
    assert!(
        other
            .verify(&corpus_target(), &sign, SystemTime::now())
            .unwrap_err()
            .is_invalid()
    );
    // sigtool agrees.
    let case = Case {
        name: "make-test-pki.sh".into(),
        expected: Verdict::Accepted,
        target: corpus_target(),
        sign,
        root_pem: std::fs::read(&root).unwrap(),
    };
    let run = sigtool_verify(&case);
    assert_eq!(run.verdict, Verdict::Accepted, "{}", run.output);
    assert_eq!(run.signer.as_deref(), Some("Example TEST CVD Signing Cert"));
}

#[test]
fn a_sign_made_by_sigtool_verifies_and_looks_like_ours() {
    let sigtool = clamav15_bin("sigtool");
    let pki = TestPki::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("signer.key"), pki.signer_key_pem()).unwrap();
    std::fs::write(path("signer.crt"), pki.signer_pem()).unwrap();
    std::fs::write(path("intermediate.crt"), pki.intermediate_pem()).unwrap();
    std::fs::write(path("target.bin"), corpus_target()).unwrap();
    let out = Command::new(&sigtool)
        .arg("--sign")
        .arg(path("target.bin"))
        .arg("--key")
        .arg(path("signer.key"))
        .arg("--cert")
        .arg(path("signer.crt"))
        .arg("--cert")
        .arg(path("intermediate.crt"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sigtool --sign failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = std::fs::read(path("target.bin.sign")).unwrap();
    let by = SignVerifier::new(pki.roots().unwrap())
        .verify(&corpus_target(), &theirs, SystemTime::now())
        .unwrap();
    assert_eq!(by.signer, pki.signer_name());

    // Same layout as ours: header, one `230::pkcs7-pem:` line of the same
    // length (same certificates, attributes and key), final newline.
    let ours = pki.sign(&corpus_target()).unwrap();
    let shape = |file: &[u8]| {
        let text = String::from_utf8(file.to_vec()).unwrap();
        let lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
        let fields: Vec<(String, usize)> = lines
            .iter()
            .map(|l| match l.rsplit_once(':') {
                Some((prefix, payload)) => (format!("{prefix}:"), payload.len()),
                None => (l.clone(), 0),
            })
            .collect();
        fields
    };
    assert_eq!(shape(&theirs), shape(&ours));
}

/// ClamAV 1.5.3 reads the format version with
/// `line.split('-').nth(1).unwrap()`: a first line `#clamsign` without a
/// `-` panics inside libclamav, which aborts the client (sigtool here;
/// freshclam and clamscan call the same code). We call such a file
/// unusable; a mirror must never hand it to clients.
#[test]
fn a_header_without_a_dash_crashes_clamav_and_is_unusable_for_us() {
    let pki = TestPki::shared().unwrap();
    let data = corpus_target();
    let sign = SignFile::new()
        .header("#clamsign")
        .line(pki.signature_line(&data, &LineOptions::new()).unwrap())
        .to_bytes();
    let err = SignVerifier::new(pki.roots().unwrap())
        .verify(&data, &sign, SystemTime::now())
        .unwrap_err();
    assert!(!err.is_invalid(), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/root.crt"), pki.root_pem()).unwrap();
    std::fs::write(dir.path().join("target.bin"), &data).unwrap();
    std::fs::write(dir.path().join("target.bin.sign"), &sign).unwrap();
    let out = sigtool15_verify(&dir.path().join("target.bin"), &dir.path().join("certs"));
    let stderr = &out.stderr;
    assert!(
        !out.status.success() && stderr.contains("panicked"),
        "sigtool no longer panics on `#clamsign` ({}): the mirror's caution may be relaxed\n{stderr}",
        out.status
    );
}

#[test]
fn sigtool_finds_and_accepts_the_sign_of_a_cvd_without_legacy_signature() {
    let pki = TestPki::shared().unwrap();
    let keys = cvdmirror::cvd::testkeys::signing_keys();
    for legacy in [LegacySignature::Absent, LegacySignature::Md5Only] {
        let spec = DbSpec::new("daily", 27_123).legacy_header(legacy);
        let cvd = build::cvd(&spec, &keys).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::write(certs.join("root.crt"), pki.root_pem()).unwrap();
        // Served as `daily.cvd`: the .sign is named after the header's version.
        std::fs::write(dir.path().join("daily.cvd"), &cvd).unwrap();
        let sign_name = cvd_sign_name("daily", 27_123);
        assert_eq!(sign_name, "daily-27123.cvd.sign");
        std::fs::write(dir.path().join(&sign_name), pki.sign(&cvd).unwrap()).unwrap();
        let out = sigtool15_verify(&dir.path().join("daily.cvd"), &certs);
        let output = format!("{}{}", out.stdout, out.stderr);
        assert!(out.status.success(), "{legacy:?}: {output}");
        assert!(
            output.contains(&sign_name) && output.contains(pki.signer_name()),
            "{legacy:?}: {output}"
        );
    }
}
