//! A corpus of generated `.sign` files (every way a certificate, a line or
//! the file can be wrong, and the ways that are still right) judged by our
//! verifier and by ClamAV 1.5.3's `sigtool --verify`: both must reach the
//! same verdict and tell "invalid" (clients refuse the file) from "could
//! not verify" (clients fall back to the legacy signature) alike.

use std::fmt::Write as _;
use std::time::SystemTime;

use cvdmirror::cvd::build::sign::{
    IntermediatePurpose, LeafKeyUsage, LeafPurpose, LineOptions, PayloadDamage, PkiOptions,
    SignDigest, SignFile, TestPki, Validity,
};
use cvdmirror::cvd::sign::{CLAMAV_FLEVEL, SignError, SignRoots, SignVerifier};

use crate::support::clamav::sigtool15_verify;
use crate::support::fixtures::sign_fixture as fixture;

/// What a client makes of a `.sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
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
pub(super) struct Case {
    pub(super) name: String,
    pub(super) expected: Verdict,
    pub(super) target: Vec<u8>,
    pub(super) sign: Vec<u8>,
    /// The root put in sigtool's certificate directory and trusted by us.
    pub(super) root_pem: Vec<u8>,
}

/// The file the corpus signs: not a database, so sigtool reads
/// `target.bin.sign` and judges nothing but the `.sign`.
pub(super) fn corpus_target() -> Vec<u8> {
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

pub(super) struct SigtoolRun {
    pub(super) verdict: Verdict,
    pub(super) signer: Option<String>,
    /// sigtool's words: `signed by '...'` or its error.
    said: String,
    pub(super) output: String,
}

/// Runs `sigtool --verify DIR/target.bin --cvdcertsdir DIR/certs` with the
/// case's target, `.sign` and root. sigtool prints `Successfully verified
/// ... signed by 'CN'` on success; on failure the error's text tells
/// ClamAV's InvalidDigitalSignature ("Error verifying signature: ...") from
/// everything that makes clients fall back ("Can't verify: ...", an I/O or
/// OpenSSL error).
pub(super) fn sigtool_verify(case: &Case) -> SigtoolRun {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("root.crt"), &case.root_pem).unwrap();
    let target = dir.path().join("target.bin");
    std::fs::write(&target, &case.target).unwrap();
    std::fs::write(dir.path().join("target.bin.sign"), &case.sign).unwrap();
    let out = sigtool15_verify(&target, &certs);
    let output = format!("{}{}", out.stdout, out.stderr);
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
        let other = scope.spawn(|| second.iter().map(sigtool_verify).collect::<Vec<_>>());
        let mut runs: Vec<SigtoolRun> = first.iter().map(sigtool_verify).collect();
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

/// The end of a long message, where OpenSSL puts the telling part.
fn short(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    match chars.len().checked_sub(80) {
        Some(cut) if cut > 0 => format!("...{}", chars[cut..].iter().collect::<String>()),
        _ => text.to_owned(),
    }
}
