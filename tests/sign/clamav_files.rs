//! ClamAV's 11 signed test files (`test-1..6.cvd`, `test-2..6.cdiff`)
//! verify with ClamAV's TEST root at a fixed date (the root expires on
//! 2027-03-26), and fail, with the kind of failure ClamAV reports, with the
//! production root, after the root's expiry, over one changed byte and
//! with a damaged signature line.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cvdmirror::cvd::Header;
use cvdmirror::cvd::build::sign::SignFile;
use cvdmirror::cvd::sign::{
    CLAMAV_FLEVEL, MIN_SIGN_FLEVEL, SignError, SignRoots, SignVerifier, cdiff_sign_name,
    cvd_sign_name,
};

use crate::support::fixtures::{sign_fixture as fixture, sign_fixture_path as fixture_path};

/// 2026-06-01 00:00 UTC: ClamAV's test chain is valid.
pub(super) const JUNE_2026: Duration = Duration::from_secs(1_780_272_000);
/// 2027-04-01 00:00 UTC: ClamAV's test root (notAfter 2027-03-26) has expired.
const APRIL_2027: Duration = Duration::from_secs(1_806_537_600);
/// Who signed ClamAV's test files.
const TEST_SIGNER: &str = "ClamAV TEST CVD Signing Cert";

pub(super) fn june_2026() -> SystemTime {
    UNIX_EPOCH + JUNE_2026
}

/// One of ClamAV's signed test files.
struct Signed {
    name: String,
    data: Vec<u8>,
    sign: Vec<u8>,
}

/// `test-1..6.cvd` and `test-2..6.cdiff` with their `.sign` files, found
/// by ClamAV's naming rules.
fn clamav_test_files() -> &'static [Signed] {
    static FILES: OnceLock<Vec<Signed>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut files = Vec::new();
        for n in 1..=6 {
            let name = format!("test-{n}.cvd");
            let data = fixture(&format!("testfiles/{name}"));
            // A CVD's .sign is named after the version in its header.
            let version = Header::parse(&data).unwrap().version;
            let sign = fixture(&format!("testfiles/{}", cvd_sign_name("test", version)));
            files.push(Signed { name, data, sign });
        }
        for n in 2..=6 {
            let name = format!("test-{n}.cdiff");
            let data = fixture(&format!("testfiles/{name}"));
            let sign = fixture(&format!("testfiles/{}", cdiff_sign_name(&name)));
            files.push(Signed { name, data, sign });
        }
        files
    })
}

fn test_root() -> SignRoots {
    let mut roots = SignRoots::none();
    roots.add_file(&fixture_path("test-pki/root.crt")).unwrap();
    roots
}

fn test_verifier() -> SignVerifier {
    SignVerifier::new(test_root())
}

/// The only signature line of a fixture `.sign`.
fn only_line(sign: &[u8]) -> String {
    let text = std::str::from_utf8(sign).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "header and one line expected:\n{text}");
    lines[1].to_owned()
}

/// `line` with its payload replaced by `f(DER)`, base64-encoded.
fn with_der(line: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let (prefix, payload) = line.rsplit_once(':').unwrap();
    let mut der = openssl::base64::decode_block(payload).unwrap();
    f(&mut der);
    format!("{prefix}:{}", openssl::base64::encode_block(&der))
}

#[test]
fn clamavs_test_files_verify_with_the_test_root() {
    let verifier = test_verifier();
    let files = clamav_test_files();
    assert_eq!(files.len(), 11);
    for file in files {
        let by = verifier
            .verify(&file.data, &file.sign, june_2026())
            .unwrap_or_else(|e| panic!("{}: {e}", file.name));
        assert_eq!(by.signer, TEST_SIGNER, "{}", file.name);
        assert_eq!(
            by.issuer, "ClamAV TEST Intermediate Signing CA",
            "{}",
            file.name
        );
        assert_eq!(by.line, 1, "{}", file.name);
        assert_eq!(by.fingerprint.len(), 64, "{}", file.name);
        // The test chain is not the production chain.
        let err = SignVerifier::new(SignRoots::official())
            .verify(&file.data, &file.sign, june_2026())
            .unwrap_err();
        assert!(err.is_invalid(), "{}: {err}", file.name);
        // No root at all: nothing is trusted.
        let err = SignVerifier::new(SignRoots::none())
            .verify(&file.data, &file.sign, june_2026())
            .unwrap_err();
        assert!(err.is_invalid(), "{}: {err}", file.name);
    }
}

#[test]
fn clamavs_test_files_expire_with_their_root() {
    let verifier = test_verifier();
    for file in clamav_test_files() {
        let err = verifier
            .verify(&file.data, &file.sign, UNIX_EPOCH + APRIL_2027)
            .unwrap_err();
        assert!(err.is_invalid(), "{}: {err}", file.name);
        assert!(err.to_string().contains("expired"), "{}: {err}", file.name);
    }
}

#[test]
fn one_changed_byte_of_a_signed_file_is_invalid() {
    let verifier = test_verifier();
    for file in clamav_test_files() {
        let len = file.data.len();
        // Header, body and (for a cdiff) the legacy footer are all covered.
        for at in [0, 100, 511, len / 2, len - 1] {
            let mut data = file.data.clone();
            data[at] ^= 0x20;
            let err = verifier.verify(&data, &file.sign, june_2026()).unwrap_err();
            assert!(
                matches!(err, SignError::Invalid(_)),
                "{} at {at}: {err}",
                file.name
            );
        }
        let mut longer = file.data.clone();
        longer.push(b'\n');
        assert!(
            verifier
                .verify(&longer, &file.sign, june_2026())
                .unwrap_err()
                .is_invalid()
        );
    }
}

#[test]
fn damaged_signature_lines_fail_as_clamav_classifies_them() {
    let verifier = test_verifier();
    for file in clamav_test_files() {
        let line = only_line(&file.sign);
        let check = |damaged: String, invalid: bool, what: &str| {
            let sign = SignFile::new().line(damaged).to_bytes();
            let err = verifier.verify(&file.data, &sign, june_2026()).unwrap_err();
            assert_eq!(err.is_invalid(), invalid, "{} {what}: {err}", file.name);
        };
        // Base64 that no longer decodes or no longer parses: unusable.
        let mut bad_char = line.clone();
        let middle = line.len() / 2;
        bad_char.replace_range(middle..=middle, "*");
        check(bad_char, false, "with a non-base64 character");
        check(
            line[..line.len() / 2 / 4 * 4].to_owned(),
            false,
            "truncated",
        );
        check(
            line.replacen("pkcs7-pem", "pkcs7-der", 1),
            false,
            "as pkcs7-der",
        );
        check(
            line.replacen("230:", "229:", 1),
            false,
            "with min flevel 229",
        );
        // Still a PKCS#7, but its signature value changed: invalid.
        check(
            with_der(&line, |der| *der.last_mut().unwrap() ^= 1),
            true,
            "with a flipped signature byte",
        );
        // The line for other feature levels is skipped: nothing verifies.
        check(
            line.replacen("230:", "230:232", 1),
            false,
            "for levels 230-232",
        );
        check(
            line.replacen("230:", &format!("{}:", CLAMAV_FLEVEL + 1), 1),
            false,
            "for later levels",
        );
    }
}

#[test]
fn clamavs_files_verify_for_the_feature_levels_they_name() {
    let file = &clamav_test_files()[0];
    for flevel in [MIN_SIGN_FLEVEL, CLAMAV_FLEVEL, 240, u32::MAX] {
        let by = test_verifier()
            .flevel(flevel)
            .verify(&file.data, &file.sign, june_2026())
            .unwrap();
        assert_eq!(by.signer, TEST_SIGNER);
    }
    let err = test_verifier()
        .flevel(MIN_SIGN_FLEVEL - 1)
        .verify(&file.data, &file.sign, june_2026())
        .unwrap_err();
    assert!(!err.is_invalid(), "{err}");
}
