//! Properties: parsing and verifying never panic; blank lines, comments
//! and CRLF endings never change a verdict; any changed byte of the signed
//! file does.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use cvdmirror::cvd::build::sign::{LineOptions, SignFile, TestPki};
use cvdmirror::cvd::sign::{SignError, SignLine, SignRoots, SignVerifier};
use proptest::prelude::*;

use super::clamav_files::JUNE_2026;
use super::corpus::corpus_target;

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
