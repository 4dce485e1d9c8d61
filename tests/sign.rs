//! ClamAV 1.5 `.sign` files (`#clamsign-1.0`): our verifier against ClamAV's
//! own signed test databases and against the real `sigtool` 1.5.3.
//!
//! - ClamAV's 11 test `.sign` files verify with ClamAV's TEST root at a fixed
//!   date (the root expires on 2027-03-26), and fail, with the kind of
//!   failure ClamAV reports, with the production root, after the root's
//!   expiry, over one changed byte and with a damaged signature line.
//! - A corpus of generated `.sign` files (every way a certificate, a line or
//!   the file can be wrong, and the ways that are still right) is judged by
//!   our verifier and by `sigtool --verify`; both must reach the same verdict
//!   and tell "invalid" (clients refuse the file) from "could not verify"
//!   (clients fall back to the legacy signature) alike. A `.sign` made by
//!   the fixtures' openssl-CLI recipe (`make-test-pki.sh`) and one made by
//!   `sigtool --sign` verify too, and sigtool finds and accepts the `.sign`
//!   of a generated CVD without legacy header signature. A first line
//!   `#clamsign` (no `-`) still crashes ClamAV 1.5.3; we call it unusable.
//! - Property tests: parsing and verifying never panic; blank lines,
//!   comments and CRLF endings never change a verdict; any changed byte of
//!   the signed file does.
//!
//! Needs the fixtures in ../shared/fixtures/clamav-sign (or
//! `$CVDMIRROR_SIGN_FIXTURES`) and ClamAV 1.5.3 built by
//! `scripts/build-clamav15` (or `$CVDMIRROR_CLAMAV15`); without them the
//! tests fail, none is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cvdmirror::cvd::Header;
use cvdmirror::cvd::build::sign::{
    IntermediatePurpose, LeafKeyUsage, LeafPurpose, LineOptions, PayloadDamage, PkiOptions,
    SignDigest, SignFile, TestPki, Validity,
};
use cvdmirror::cvd::build::{self, DbSpec, LegacySignature};
use cvdmirror::cvd::sign::{
    CLAMAV_FLEVEL, MIN_SIGN_FLEVEL, SignError, SignLine, SignRoots, SignVerifier, cdiff_sign_name,
    cvd_sign_name,
};
use proptest::prelude::*;

/// 2026-06-01 00:00 UTC: ClamAV's test chain is valid.
const JUNE_2026: Duration = Duration::from_secs(1_780_272_000);
/// 2027-04-01 00:00 UTC: ClamAV's test root (notAfter 2027-03-26) has expired.
const APRIL_2027: Duration = Duration::from_secs(1_806_537_600);
/// Who signed ClamAV's test files.
const TEST_SIGNER: &str = "ClamAV TEST CVD Signing Cert";

fn june_2026() -> SystemTime {
    UNIX_EPOCH + JUNE_2026
}

// ---------------------------------------------------------------------------
// ClamAV's own test files

fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CVDMIRROR_SIGN_FIXTURES") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("CVDMIRROR_FIXTURES") {
        PathBuf::from(dir).join("../clamav-sign")
    } else {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/clamav-sign"
        ))
    }
}

fn fixture_path(relative: &str) -> PathBuf {
    let path = fixtures_dir().join(relative);
    assert!(
        path.is_file(),
        "missing ClamAV .sign fixture {}: the fixtures live in ../shared/fixtures/clamav-sign \
         (set CVDMIRROR_SIGN_FIXTURES, or CVDMIRROR_FIXTURES to its sibling `clamav`)",
        path.display()
    );
    path
}

fn fixture(relative: &str) -> Vec<u8> {
    std::fs::read(fixture_path(relative)).unwrap()
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

// ---------------------------------------------------------------------------
// The corpus, judged by us and by sigtool 1.5.3

/// What a client makes of a `.sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Verified: the file is accepted on the strength of the `.sign`.
    Accepted,
    /// ClamAV's InvalidDigitalSignature: the file is refused.
    Invalid,
    /// ClamAV's CannotVerify (or another error): the `.sign` is ignored and
    /// the legacy signature decides.
    Unusable,
}

impl Verdict {
    fn of(result: &Result<String, SignError>) -> Self {
        match result {
            Ok(_) => Self::Accepted,
            Err(SignError::Invalid(_)) => Self::Invalid,
            Err(SignError::Unusable(_)) => Self::Unusable,
        }
    }
}

/// One generated `.sign` and the verdict ClamAV 1.5.3 is expected to reach.
struct Case {
    name: String,
    expected: Verdict,
    target: Vec<u8>,
    sign: Vec<u8>,
    /// The root put in sigtool's certificate directory and trusted by us.
    root_pem: Vec<u8>,
}

/// The file the corpus signs: not a database, so sigtool reads
/// `target.bin.sign` and judges nothing but the `.sign`.
fn corpus_target() -> Vec<u8> {
    let mut data = b"cvdmirror .sign corpus target\n".to_vec();
    data.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    data
}

fn corpus() -> Vec<Case> {
    use Verdict::{Accepted, Invalid, Unusable};
    let pki = TestPki::shared().unwrap();
    let data = corpus_target();
    let line = |options: &LineOptions| pki.signature_line(&data, options).unwrap();
    let valid = line(&LineOptions::new());
    let mut cases = Vec::new();
    let mut add = |name: &str, expected: Verdict, sign: Vec<u8>, root_pem: Vec<u8>| {
        cases.push(Case {
            name: name.to_owned(),
            expected,
            target: data.clone(),
            sign,
            root_pem,
        });
    };
    let root = pki.root_pem();

    add(
        "valid, as sigtool signs",
        Accepted,
        pki.sign(&data).unwrap(),
        root.clone(),
    );

    // Certificates.
    let reissued = |options: PkiOptions| pki.reissue(&options).unwrap();
    let certificate_cases = [
        (
            "leaf EKU codeSigning only",
            Invalid,
            PkiOptions {
                leaf_purpose: LeafPurpose::CodeSigningOnly,
                ..PkiOptions::default()
            },
        ),
        (
            "leaf EKU emailProtection only",
            Accepted,
            PkiOptions {
                leaf_purpose: LeafPurpose::EmailProtection,
                ..PkiOptions::default()
            },
        ),
        (
            "leaf without EKU",
            Accepted,
            PkiOptions {
                leaf_purpose: LeafPurpose::Unrestricted,
                ..PkiOptions::default()
            },
        ),
        (
            "leaf keyUsage keyEncipherment only",
            Invalid,
            PkiOptions {
                leaf_key_usage: LeafKeyUsage::KeyEnciphermentOnly,
                ..PkiOptions::default()
            },
        ),
        (
            "leaf keyUsage nonRepudiation only",
            Accepted,
            PkiOptions {
                leaf_key_usage: LeafKeyUsage::NonRepudiationOnly,
                ..PkiOptions::default()
            },
        ),
        (
            "leaf without keyUsage",
            Accepted,
            PkiOptions {
                leaf_key_usage: LeafKeyUsage::Unrestricted,
                ..PkiOptions::default()
            },
        ),
        (
            "intermediate EKU OCSPSigning only",
            Invalid,
            PkiOptions {
                intermediate_purpose: IntermediatePurpose::OcspSigningOnly,
                ..PkiOptions::default()
            },
        ),
        (
            "intermediate without EKU",
            Accepted,
            PkiOptions {
                intermediate_purpose: IntermediatePurpose::Unrestricted,
                ..PkiOptions::default()
            },
        ),
        (
            "leaf expired",
            Invalid,
            PkiOptions {
                leaf_validity: Validity::Expired,
                ..PkiOptions::default()
            },
        ),
        (
            "leaf not yet valid",
            Invalid,
            PkiOptions {
                leaf_validity: Validity::NotYetValid,
                ..PkiOptions::default()
            },
        ),
        (
            "intermediate expired",
            Invalid,
            PkiOptions {
                intermediate_validity: Validity::Expired,
                ..PkiOptions::default()
            },
        ),
        (
            "root expired",
            Invalid,
            PkiOptions {
                root_validity: Validity::Expired,
                ..PkiOptions::default()
            },
        ),
    ];
    for (name, expected, options) in certificate_cases {
        let variant = reissued(options);
        add(
            name,
            expected,
            variant.sign(&data).unwrap(),
            variant.root_pem(),
        );
    }
    add(
        "chain not to the trusted root",
        Invalid,
        pki.sign(&data).unwrap(),
        fixture("test-pki/root.crt"),
    );

    // What the PKCS#7 embeds and how it is signed.
    let one_line = |options: LineOptions| SignFile::new().line(line(&options)).to_bytes();
    add(
        "no certificate embedded (NOCERTS)",
        Unusable,
        one_line(LineOptions::new().without_signer().without_intermediate()),
        root.clone(),
    );
    add(
        "signer not embedded, intermediate embedded",
        Unusable,
        one_line(LineOptions::new().without_signer()),
        root.clone(),
    );
    add(
        "intermediate not embedded",
        Invalid,
        one_line(LineOptions::new().without_intermediate()),
        root.clone(),
    );
    add(
        "root embedded too",
        Accepted,
        one_line(LineOptions::new().with_root()),
        root.clone(),
    );
    // What clamav#1588 saw: a chain that embeds its own root, checked
    // against another root, fails on the embedded self-signed root.
    add(
        "root embedded, another root trusted",
        Invalid,
        one_line(LineOptions::new().with_root()),
        fixture("test-pki/root.crt"),
    );
    add(
        "PKCS#7 enveloped data, not signed data",
        Unusable,
        SignFile::new().line(enveloped_line(pki)).to_bytes(),
        root.clone(),
    );
    add(
        "SHA-512",
        Accepted,
        one_line(LineOptions::new().digest(SignDigest::Sha512)),
        root.clone(),
    );
    add(
        "no signed attributes",
        Accepted,
        one_line(LineOptions::new().without_signed_attributes()),
        root.clone(),
    );
    add(
        "SHA-512, no signed attributes",
        Accepted,
        one_line(
            LineOptions::new()
                .digest(SignDigest::Sha512)
                .without_signed_attributes(),
        ),
        root.clone(),
    );

    // Line fields.
    add(
        "min flevel 229",
        Unusable,
        one_line(LineOptions::new().min_flevel(229)),
        root.clone(),
    );
    add(
        "min flevel above ours",
        Unusable,
        one_line(LineOptions::new().min_flevel(CLAMAV_FLEVEL + 1)),
        root.clone(),
    );
    add(
        "max flevel below ours",
        Unusable,
        one_line(LineOptions::new().max_flevel(CLAMAV_FLEVEL - 1)),
        root.clone(),
    );
    add(
        "max flevel = ours",
        Accepted,
        one_line(LineOptions::new().max_flevel(CLAMAV_FLEVEL)),
        root.clone(),
    );
    add(
        "min = max flevel = ours",
        Accepted,
        one_line(
            LineOptions::new()
                .min_flevel(CLAMAV_FLEVEL)
                .max_flevel(CLAMAV_FLEVEL),
        ),
        root.clone(),
    );
    add(
        "format pkcs7-der",
        Unusable,
        one_line(LineOptions::new().format("pkcs7-der")),
        root.clone(),
    );
    add(
        "extra fields after the payload",
        Accepted,
        one_line(LineOptions::new().extra_field("x").extra_field("")),
        root.clone(),
    );
    add(
        "max flevel field missing",
        Unusable,
        SignFile::new()
            .line(valid.replacen("230::", "230:", 1))
            .to_bytes(),
        root.clone(),
    );
    add(
        "base64 with a non-base64 character",
        Unusable,
        one_line(LineOptions::new().damage(PayloadDamage::InvalidCharacter)),
        root.clone(),
    );
    add(
        "base64 truncated",
        Unusable,
        one_line(LineOptions::new().damage(PayloadDamage::Truncated)),
        root.clone(),
    );
    add(
        "signature value changed",
        Invalid,
        one_line(LineOptions::new().damage(PayloadDamage::SignatureValueFlipped)),
        root.clone(),
    );
    add(
        "signature over other content",
        Invalid,
        SignFile::new()
            .line(pki.signature_line(b"other", &LineOptions::new()).unwrap())
            .to_bytes(),
        root.clone(),
    );

    // The file around the lines.
    let with_header = |header: &str| {
        SignFile::new()
            .header(header)
            .line(valid.clone())
            .to_bytes()
    };
    add(
        "header #clamsign-2.0",
        Unusable,
        with_header("#clamsign-2.0"),
        root.clone(),
    );
    add(
        "header #clamsig",
        Unusable,
        with_header("#clamsig"),
        root.clone(),
    );
    add(
        "header with a trailing space",
        Unusable,
        with_header("#clamsign-1.0 "),
        root.clone(),
    );
    add(
        "header #clamsign-1.0-extra",
        Accepted,
        with_header("#clamsign-1.0-extra"),
        root.clone(),
    );
    add(
        "no header line",
        Unusable,
        format!("{valid}\n").into_bytes(),
        root.clone(),
    );
    add("empty file", Unusable, Vec::new(), root.clone());
    add(
        "header only",
        Unusable,
        SignFile::new().to_bytes(),
        root.clone(),
    );
    add(
        "blank lines and # comments",
        Accepted,
        SignFile::new()
            .blank()
            .comment("signed by cvdmirror")
            .line("#")
            .blank()
            .line(valid.clone())
            .blank()
            .comment("end")
            .to_bytes(),
        root.clone(),
    );
    add(
        "CRLF line endings",
        Accepted,
        SignFile::new().line(valid.clone()).crlf(true).to_bytes(),
        root.clone(),
    );
    add(
        "no final newline",
        Accepted,
        pki.sign(&data)
            .unwrap()
            .strip_suffix(b"\n")
            .unwrap()
            .to_vec(),
        root.clone(),
    );
    add(
        "spaces around the line",
        Accepted,
        SignFile::new().line(format!(" \t{valid}  ")).to_bytes(),
        root.clone(),
    );
    add(
        "a comment that is not UTF-8",
        Unusable,
        [
            SignFile::new().to_bytes(),
            b"# \xff\xfe\n".to_vec(),
            format!("{valid}\n").into_bytes(),
        ]
        .concat(),
        root.clone(),
    );

    // Several lines: the first usable one decides.
    let two = |first: String| {
        SignFile::new()
            .line(first)
            .blank()
            .line(valid.clone())
            .to_bytes()
    };
    add(
        "1st over other content, 2nd valid",
        Invalid,
        two(pki.signature_line(b"other", &LineOptions::new()).unwrap()),
        root.clone(),
    );
    add(
        "1st for other flevels, 2nd valid",
        Accepted,
        two(line(&LineOptions::new().max_flevel(CLAMAV_FLEVEL - 1))),
        root.clone(),
    );
    add(
        "1st without signer, 2nd valid",
        Accepted,
        two(line(&LineOptions::new().without_signer())),
        root.clone(),
    );
    add(
        "1st enveloped data, 2nd valid",
        Accepted,
        two(enveloped_line(pki)),
        root.clone(),
    );
    add(
        "1st base64 damaged, 2nd valid",
        Unusable,
        two(line(
            &LineOptions::new().damage(PayloadDamage::InvalidCharacter),
        )),
        root.clone(),
    );
    add(
        "1st min flevel 229, 2nd valid",
        Unusable,
        two(line(&LineOptions::new().min_flevel(229))),
        root.clone(),
    );
    add(
        "1st pkcs7-der, 2nd valid",
        Unusable,
        two(line(&LineOptions::new().format("pkcs7-der"))),
        root.clone(),
    );
    add(
        "1st expired leaf, 2nd valid",
        Invalid,
        two(reissued(PkiOptions {
            leaf_validity: Validity::Expired,
            ..PkiOptions::default()
        })
        .signature_line(&data, &LineOptions::new())
        .unwrap()),
        root.clone(),
    );
    add(
        "1st valid, 2nd over other content",
        Accepted,
        SignFile::new()
            .line(valid.clone())
            .blank()
            .line(pki.signature_line(b"other", &LineOptions::new()).unwrap())
            .to_bytes(),
        root,
    );
    cases
}

/// A `230::pkcs7-pem:` line holding a PKCS#7 that parses but is enveloped
/// (encrypted) data, not signed data: ClamAV skips it (NotSigned).
fn enveloped_line(pki: &TestPki) -> String {
    let recipient = openssl::x509::X509::from_pem(&pki.signer_pem()).unwrap();
    let mut recipients = openssl::stack::Stack::new().unwrap();
    recipients.push(recipient).unwrap();
    let p7 = openssl::pkcs7::Pkcs7::encrypt(
        &recipients,
        b"not a signature",
        openssl::symm::Cipher::aes_128_cbc(),
        openssl::pkcs7::Pkcs7Flags::BINARY,
    )
    .unwrap();
    format!(
        "230::pkcs7-pem:{}",
        openssl::base64::encode_block(&p7.to_der().unwrap())
    )
}

fn clamav15() -> PathBuf {
    let prefix = std::env::var_os("CVDMIRROR_CLAMAV15").map_or_else(
        || PathBuf::from("/var/cache/cvdmirror-test/clamav-1.5.3"),
        PathBuf::from,
    );
    let sigtool = prefix.join("bin/sigtool");
    assert!(
        sigtool.is_file(),
        "ClamAV 1.5.3's sigtool not found at {}: run scripts/build-clamav15 \
         (or set CVDMIRROR_CLAMAV15 to its prefix)",
        sigtool.display()
    );
    prefix
}

/// What `sigtool --verify` made of a case.
struct SigtoolRun {
    verdict: Verdict,
    signer: Option<String>,
    /// sigtool's words: `signed by '...'` or its error.
    said: String,
    output: String,
}

/// Runs `sigtool --verify DIR/target.bin --cvdcertsdir DIR/certs` with the
/// case's target, `.sign` and root. sigtool prints `Successfully verified
/// ... signed by 'CN'` on success; on failure the error's text tells
/// ClamAV's InvalidDigitalSignature ("Error verifying signature: ...") from
/// everything that makes clients fall back ("Can't verify: ...", an I/O or
/// OpenSSL error).
fn sigtool_verify(sigtool: &Path, case: &Case) -> SigtoolRun {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("root.crt"), &case.root_pem).unwrap();
    let target = dir.path().join("target.bin");
    std::fs::write(&target, &case.target).unwrap();
    std::fs::write(dir.path().join("target.bin.sign"), &case.sign).unwrap();
    let out = Command::new(sigtool)
        .arg("--verify")
        .arg(&target)
        .arg("--cvdcertsdir")
        .arg(&certs)
        .env_remove("CVD_CERTS_DIR")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let signer = output
        .split_once("Successfully verified file")
        .and_then(|(_, rest)| rest.split_once("signed by '"))
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(name, _)| name.to_owned());
    let verdict = if out.status.success() && signer.is_some() {
        Verdict::Accepted
    } else if output.contains("Error verifying signature: ") {
        Verdict::Invalid
    } else {
        Verdict::Unusable
    };
    assert!(
        out.status.success() == (verdict == Verdict::Accepted),
        "sigtool's exit status and output disagree on {}: {}\n{output}",
        case.name,
        out.status
    );
    let said = output
        .lines()
        .find_map(|l| {
            l.split_once("Failed to verify file '")
                .and_then(|(_, rest)| rest.split_once("': "))
                .map(|(_, why)| why.to_owned())
        })
        .or_else(|| signer.as_ref().map(|s| format!("signed by '{s}'")))
        .unwrap_or_else(|| output.trim().to_owned());
    SigtoolRun {
        verdict,
        signer,
        said,
        output,
    }
}

#[test]
fn sigtool_and_we_agree_on_every_corpus_case() {
    let sigtool = clamav15().join("bin/sigtool");
    let cases = corpus();
    let ours: Vec<Result<String, SignError>> = cases
        .iter()
        .map(|case| {
            let mut roots = SignRoots::none();
            roots.add_pem(&case.root_pem, "case root").unwrap();
            SignVerifier::new(roots)
                .verify(&case.target, &case.sign, SystemTime::now())
                .map(|by| by.signer)
        })
        .collect();
    // Two at a time: sigtool takes about 0.1 s a run.
    let (first, second) = cases.split_at(cases.len() / 2);
    let theirs: Vec<SigtoolRun> = std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            second
                .iter()
                .map(|c| sigtool_verify(&sigtool, c))
                .collect::<Vec<_>>()
        });
        let mut runs: Vec<SigtoolRun> = first.iter().map(|c| sigtool_verify(&sigtool, c)).collect();
        runs.extend(other.join().unwrap());
        runs
    });

    let mut table = format!(
        "{:<44} {:<9} {:<9} {:<9} sigtool's words\n",
        "case", "expected", "ours", "sigtool"
    );
    let mut failures = Vec::new();
    for ((case, ours), theirs) in cases.iter().zip(&ours).zip(&theirs) {
        let our_verdict = Verdict::of(ours);
        // Where OpenSSL's certificate check failed, we name the same cause
        // ("certificate has expired", "unsuitable certificate purpose").
        let same_cause = theirs
            .said
            .rsplit_once("Verify error: ")
            .is_none_or(|(_, cause)| {
                ours.as_ref()
                    .is_err_and(|e| e.to_string().contains(cause.trim()))
            });
        let ok = our_verdict == theirs.verdict
            && our_verdict == case.expected
            && ours.as_ref().ok() == theirs.signer.as_ref()
            && same_cause;
        writeln!(
            table,
            "{:<44} {:<9} {:<9} {:<9} {}{}",
            case.name,
            format!("{:?}", case.expected),
            format!("{our_verdict:?}"),
            format!("{:?}", theirs.verdict),
            short(&theirs.said),
            if ok { "" } else { "  <-- MISMATCH" }
        )
        .unwrap();
        if !ok {
            failures.push(format!(
                "{}:\n  ours: {ours:?}\n  sigtool: {}",
                case.name,
                theirs.output.trim()
            ));
        }
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "our verifier, sigtool 1.5.3 and the expected verdicts disagree:\n{table}\n{}",
        failures.join("\n")
    );
}

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
    let run = sigtool_verify(&clamav15().join("bin/sigtool"), &case);
    assert_eq!(run.verdict, Verdict::Accepted, "{}", run.output);
    assert_eq!(run.signer.as_deref(), Some("Example TEST CVD Signing Cert"));
}

#[test]
fn a_sign_made_by_sigtool_verifies_and_looks_like_ours() {
    let sigtool = clamav15().join("bin/sigtool");
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

    let sigtool = clamav15().join("bin/sigtool");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/root.crt"), pki.root_pem()).unwrap();
    std::fs::write(dir.path().join("target.bin"), &data).unwrap();
    std::fs::write(dir.path().join("target.bin.sign"), &sign).unwrap();
    let out = Command::new(&sigtool)
        .arg("--verify")
        .arg(dir.path().join("target.bin"))
        .arg("--cvdcertsdir")
        .arg(dir.path().join("certs"))
        .env_remove("CVD_CERTS_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("panicked"),
        "sigtool no longer panics on `#clamsign` ({}): the mirror's caution may be relaxed\n{stderr}",
        out.status
    );
}

#[test]
fn sigtool_finds_and_accepts_the_sign_of_a_cvd_without_legacy_signature() {
    let sigtool = clamav15().join("bin/sigtool");
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
        let out = Command::new(&sigtool)
            .arg("--verify")
            .arg(dir.path().join("daily.cvd"))
            .arg("--cvdcertsdir")
            .arg(&certs)
            .env_remove("CVD_CERTS_DIR")
            .output()
            .unwrap();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{legacy:?}: {output}");
        assert!(
            output.contains(&sign_name) && output.contains(pki.signer_name()),
            "{legacy:?}: {output}"
        );
    }
}

// ---------------------------------------------------------------------------
// Properties

/// The corpus target and its valid `.sign` line, made once.
fn signed_target() -> &'static (Vec<u8>, String) {
    static SIGNED: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let data = corpus_target();
        let line = TestPki::shared()
            .unwrap()
            .signature_line(&data, &LineOptions::new())
            .unwrap();
        (data, line)
    })
}

fn shared_verifier() -> SignVerifier {
    SignVerifier::new(TestPki::shared().unwrap().roots().unwrap())
}

/// Something that may surround a signature line without changing anything.
#[derive(Debug, Clone)]
enum Filler {
    Blank,
    Whitespace(String),
    Comment(String),
}

fn filler() -> impl Strategy<Value = Filler> {
    prop_oneof![
        Just(Filler::Blank),
        "[ \t]{1,4}".prop_map(Filler::Whitespace),
        "[^\n]{0,40}".prop_map(|t| Filler::Comment(format!("#{t}"))),
    ]
}

fn render(filler: &Filler) -> String {
    match filler {
        Filler::Blank => String::new(),
        Filler::Whitespace(s) | Filler::Comment(s) => s.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_any_line_never_panics(line in "\\PC{0,200}") {
        let _ = SignLine::parse(&line);
    }

    #[test]
    fn parsing_near_lines_never_panics(
        line in "[0-9]{0,11}:[0-9]{0,11}:(pkcs7-pem|pkcs7-der|x)?:[A-Za-z0-9+/=!-]{0,300}(:.{0,5})?"
    ) {
        let _ = SignLine::parse(&line);
    }

    #[test]
    fn verifying_any_bytes_never_panics(sign in proptest::collection::vec(any::<u8>(), 0..600)) {
        let verifier = SignVerifier::new(SignRoots::official());
        let at = UNIX_EPOCH + JUNE_2026;
        prop_assert!(verifier.verify(b"data", &sign, at).is_err());
        let with_header = [b"#clamsign-1.0\n".as_slice(), &sign].concat();
        prop_assert!(verifier.verify(b"data", &with_header, at).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn verifying_damaged_signs_never_panics(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (data, line) = signed_target();
        let mut sign = SignFile::new().line(line.clone()).to_bytes();
        let at = at.index(sign.len());
        sign[at] = byte;
        let _ = shared_verifier().verify(data, &sign, SystemTime::now());
        sign.truncate(at);
        let _ = shared_verifier().verify(data, &sign, SystemTime::now());
    }

    #[test]
    fn blank_lines_comments_and_crlf_change_nothing(
        before in proptest::collection::vec(filler(), 0..4),
        after in proptest::collection::vec(filler(), 0..3),
        pad_left in "[ \t]{0,3}",
        pad_right in "[ \t]{0,3}",
        crlf in any::<bool>(),
    ) {
        let (data, line) = signed_target();
        let mut file = SignFile::new().crlf(crlf);
        for f in &before {
            file = file.line(render(f));
        }
        file = file.line(format!("{pad_left}{line}{pad_right}"));
        for f in &after {
            file = file.line(render(f));
        }
        let by = shared_verifier().verify(data, &file.to_bytes(), SystemTime::now());
        let by = by.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&by.signer, TestPki::shared().unwrap().signer_name());
        prop_assert_eq!(by.line, before.len() + 1);
    }

    #[test]
    fn any_changed_byte_of_the_signed_data_is_invalid(at in any::<prop::sample::Index>(), xor in 1..=255u8) {
        let (data, line) = signed_target();
        let sign = SignFile::new().line(line.clone()).to_bytes();
        let mut changed = data.clone();
        let at = at.index(changed.len());
        changed[at] ^= xor;
        let err = shared_verifier().verify(&changed, &sign, SystemTime::now());
        prop_assert!(matches!(err, Err(SignError::Invalid(_))), "{:?}", err);
    }
}

/// The end of a long message, where OpenSSL puts the telling part.
fn short(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    match chars.len().checked_sub(80) {
        Some(cut) if cut > 0 => format!("...{}", chars[cut..].iter().collect::<String>()),
        _ => text.to_owned(),
    }
}
