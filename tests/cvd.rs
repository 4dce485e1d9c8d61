//! Integration tests of the `cvd` module: the genuine ClamAV fixtures verify
//! with the official keys and every kind of damage is caught with the right
//! reason; generated CVD/CLD/cdiff files round-trip with the test keys and
//! never verify with the official keys alone; mutations never verify.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on broken fixtures"
)]

mod support;

use std::path::PathBuf;
use std::sync::LazyLock;

use cvdmirror::cvd::{
    self, Cdiff, DbKind, Expected, KeyRole, Signed, TrustedKeys, VerifyError, build, testkeys,
};
use proptest::prelude::*;
use support::clamav::sigtool_info;
use support::fixtures::{fixture, fixture_path};

const GENUINE: [u32; 3] = [19, 268, 339];

fn genuine_path(version: u32) -> PathBuf {
    fixture_path(&format!("bytecode-{version}.cvd"))
}

fn genuine(version: u32) -> Vec<u8> {
    fixture(&format!("bytecode-{version}.cvd"))
}

fn bytecode(version: u32) -> Expected {
    Expected::cvd("bytecode").version(version)
}

/// Built once: signing with a 2048-bit private exponent is slow in debug builds.
static GENERATED_CVD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    build::cvd(
        &build::DbSpec::new("main", 4).signatures(20),
        &testkeys::signing_keys(),
    )
    .unwrap()
});
static GENERATED_CLD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    build::cld(
        &build::DbSpec::new("main", 4).signatures(20),
        &testkeys::signing_keys(),
        false,
    )
    .unwrap()
});
static GENERATED_CDIFF: LazyLock<Vec<u8>> =
    LazyLock::new(|| build::cdiff("daily", 77, &testkeys::signing_keys()).unwrap());

fn official() -> TrustedKeys {
    TrustedKeys::official()
}

fn verify(bytes: &[u8], expected: &Expected) -> Result<cvd::Verified, VerifyError> {
    cvd::verify_bytes(bytes, expected, &official())
}

/// Index of the header's dsig field.
fn dsig_offset(file: &[u8]) -> usize {
    let text = std::str::from_utf8(&file[..512]).unwrap();
    text.match_indices(':').nth(5).unwrap().0 + 1
}

#[test]
fn genuine_fixtures_verify_with_the_official_keys() {
    for (version, members) in [(19, 6), (268, 51), (339, 87)] {
        let ok = cvd::verify_file(&genuine_path(version), &bytecode(version), &official()).unwrap();
        assert_eq!(ok.header.version, version);
        assert_eq!(ok.kind, DbKind::Cvd);
        assert_eq!(ok.name, "bytecode");
        assert!(ok.compressed);
        assert_eq!(ok.file_size, genuine(version).len() as u64);
        assert_eq!(ok.members.len(), members);
        assert_eq!(ok.members[0].name, "COPYING");
        assert_eq!(ok.members[1].name, "bytecode.info");
        assert!(ok.tar_size > ok.file_size);
    }
    let stimes: Vec<u64> = GENUINE
        .iter()
        .map(|&v| {
            verify(&genuine(v), &Expected::cvd("bytecode"))
                .unwrap()
                .header
                .stime
        })
        .collect();
    assert_eq!(stimes, [1_273_845_430, 1_440_082_241, 1_757_593_759]);
}

#[test]
fn genuine_fixtures_need_the_official_keys() {
    let err =
        cvd::verify_bytes(&genuine(339), &bytecode(339), &testkeys::public_keys()).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadSignature(Signed::Header)),
        "{err}"
    );
    // Official header key alone is not enough either: the .info DSIG needs its own.
    let header_only = TrustedKeys::none().with(KeyRole::Cvd, cvd::PublicKey::official_cvd());
    let err = cvd::verify_bytes(&genuine(339), &bytecode(339), &header_only).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadSignature(Signed::Info)),
        "{err}"
    );
}

#[test]
fn wrong_version_and_wrong_name_are_named() {
    let err = verify(&genuine(339), &Expected::cvd("bytecode").version(338)).unwrap_err();
    assert_eq!(err.to_string(), "wrong version: expected 338, got 339");
    let err = verify(&genuine(268), &Expected::cvd("daily")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "wrong database: expected daily, got bytecode.info"
    );
}

#[test]
fn a_changed_header_signature_fails() {
    for version in GENUINE {
        let mut file = genuine(version);
        let at = dsig_offset(&file) + 10;
        file[at] = if file[at] == b'b' { b'c' } else { b'b' };
        let err = verify(&file, &bytecode(version)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header signature does not verify with any trusted key"
        );
        file[at] = b'!';
        assert!(matches!(
            verify(&file, &bytecode(version)),
            Err(VerifyError::SignatureEncoding(Signed::Header, _))
        ));
    }
}

#[test]
fn a_changed_md5_field_fails() {
    for version in GENUINE {
        let mut file = genuine(version);
        let at = dsig_offset(&file) - 2;
        file[at] = if file[at] == b'0' { b'1' } else { b'0' };
        let err = verify(&file, &bytecode(version)).unwrap_err();
        assert_eq!(err.to_string(), "md5 of body does not match header");
        // ClamAV compares the hex text: upper case is not the same md5.
        let mut file = genuine(version);
        let hex = (at - 31..=at)
            .find(|&i| file[i].is_ascii_lowercase())
            .unwrap();
        file[hex] = file[hex].to_ascii_uppercase();
        assert!(matches!(
            verify(&file, &bytecode(version)),
            Err(VerifyError::HeaderForm(_))
        ));
    }
}

#[test]
fn a_changed_body_byte_fails() {
    for version in GENUINE {
        for at in [
            513,
            600,
            genuine(version).len() / 2,
            genuine(version).len() - 1,
        ] {
            let mut file = genuine(version);
            file[at] ^= 0x20;
            let err = verify(&file, &bytecode(version)).unwrap_err();
            assert!(
                matches!(err, VerifyError::Md5Mismatch),
                "byte {at} of {version}: {err}"
            );
        }
    }
}

#[test]
fn changed_header_text_fails() {
    let file = genuine(19);
    let text = std::str::from_utf8(&file[..512]).unwrap();
    let builder = text.find("nervous").unwrap();
    let line_end = text.trim_end().len();
    for (at, byte) in [
        (builder, b'N'),
        (line_end, b'0'),
        (line_end + 3, b'x'),
        (line_end + 3, 0),
        (15, b'9'),
    ] {
        let mut bad = file.clone();
        bad[at] = byte;
        assert!(verify(&bad, &bytecode(19)).is_err(), "byte {at} -> {byte}");
    }
}

#[test]
fn truncation_fails_as_truncation() {
    for version in GENUINE {
        let file = genuine(version);
        for len in [
            0,
            100,
            511,
            512,
            513,
            530,
            2000,
            file.len() / 2,
            file.len() - 9,
            file.len() - 1,
        ] {
            let err = verify(&file[..len], &bytecode(version)).unwrap_err();
            assert!(
                matches!(err, VerifyError::Truncated(_)),
                "{version} cut at {len}: {err}"
            );
            assert!(err.to_string().starts_with("truncated: "));
        }
    }
}

#[test]
fn trailing_garbage_changes_the_md5() {
    let mut file = genuine(19);
    file.push(b'\n');
    assert!(matches!(
        verify(&file, &bytecode(19)),
        Err(VerifyError::Md5Mismatch)
    ));
}

#[test]
fn a_cvd_also_passes_the_cld_checks_but_a_cld_is_not_a_cvd() {
    assert!(verify(&genuine(268), &Expected::cld("bytecode")).is_ok());
    let keys = testkeys::signing_keys();
    let cld = build::cld(&build::DbSpec::new("daily", 9), &keys, false).unwrap();
    let err = cvd::verify_bytes(&cld, &Expected::cvd("daily"), &testkeys::trusted()).unwrap_err();
    assert!(matches!(err, VerifyError::Unsigned), "{err}");
}

#[test]
fn a_cld_header_is_all_x_or_fully_signed() {
    let keys = testkeys::signing_keys();
    let cld = build::cld(&build::DbSpec::new("daily", 9), &keys, false).unwrap();
    let text = std::str::from_utf8(&cld[..512]).unwrap();
    let dsig_x = text.find(":X:X:").unwrap() + 3;
    let mut bad = cld.clone();
    bad[dsig_x] = b'Y';
    let err = cvd::verify_bytes(&bad, &Expected::cld("daily"), &testkeys::trusted()).unwrap_err();
    assert!(matches!(err, VerifyError::HeaderForm(_)), "{err}");
    // A genuine CVD under the CLD name still has its header signature checked.
    let mut cvd_as_cld = genuine(19);
    let at = dsig_offset(&cvd_as_cld) + 3;
    cvd_as_cld[at] = if cvd_as_cld[at] == b'b' { b'c' } else { b'b' };
    let err = verify(&cvd_as_cld, &Expected::cld("bytecode")).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadSignature(Signed::Header)),
        "{err}"
    );
}

#[test]
fn expected_can_come_from_a_file_name() {
    assert_eq!(
        Expected::from_file_name("daily.cld"),
        Some(Expected::cld("daily"))
    );
    assert_eq!(
        Expected::from_file_name("main.cvd"),
        Some(Expected::cvd("main"))
    );
    assert_eq!(Expected::from_file_name("daily-5.cdiff"), None);
    assert_eq!(Expected::from_file_name(".cvd"), None);
}

// ---- generated fixtures ----

#[test]
fn generated_cvd_round_trips_with_test_keys_only() {
    let keys = testkeys::signing_keys();
    let spec = build::DbSpec::new("daily", 27_001)
        .signatures(123)
        .flevel(210)
        .stime(1_750_000_000);
    let file = build::cvd(&spec, &keys).unwrap();
    let ok = cvd::verify_bytes(
        &file,
        &Expected::cvd("daily").version(27_001),
        &testkeys::trusted(),
    )
    .unwrap();
    assert_eq!(
        (ok.header.version, ok.header.signatures, ok.header.flevel),
        (27_001, 123, 210)
    );
    assert_eq!(ok.header.stime, 1_750_000_000);
    assert_eq!(ok.header.builder, "cvdmirror");
    let names: Vec<&str> = ok.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["COPYING", "daily.info", "daily.hdb"]);
    // The test keys alone are enough, and the official ones alone are not.
    assert!(cvd::verify_bytes(&file, &Expected::cvd("daily"), &testkeys::public_keys()).is_ok());
    let err = verify(&file, &Expected::cvd("daily")).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadSignature(Signed::Header)),
        "{err}"
    );
    // An operator who configured only the test CVD key still needs the .info key.
    let mut partial = TrustedKeys::official();
    partial
        .add_config(&format!("cvd:{}", testkeys::public_key(KeyRole::Cvd)))
        .unwrap();
    let err = cvd::verify_bytes(&file, &Expected::cvd("daily"), &partial).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadSignature(Signed::Info)),
        "{err}"
    );
}

#[test]
fn generated_cvd_reaches_the_requested_size() {
    let keys = testkeys::signing_keys();
    let file = build::cvd(&build::DbSpec::new("main", 62).size(2_000_000), &keys).unwrap();
    let diff = (file.len() as i64 - 2_000_000).abs();
    assert!(diff < 20_000, "size {}", file.len());
    let ok = cvd::verify_bytes(
        &file,
        &Expected::cvd("main").version(62),
        &testkeys::trusted(),
    )
    .unwrap();
    assert_eq!(ok.members.last().unwrap().name, "main.pad");
}

#[test]
fn generated_cld_round_trips_plain_and_compressed() {
    let keys = testkeys::signing_keys();
    let spec = build::DbSpec::new("bytecode", 340)
        .signatures(3)
        .size(200_000);
    for compressed in [false, true] {
        let file = build::cld(&spec, &keys, compressed).unwrap();
        assert_eq!(&file[512..519] == b"COPYING", !compressed);
        let ok = cvd::verify_bytes(
            &file,
            &Expected::cld("bytecode").version(340),
            &testkeys::trusted(),
        )
        .unwrap();
        assert_eq!(ok.compressed, compressed);
        assert_eq!(ok.kind, DbKind::Cld);
        assert_eq!(ok.header.md5, None);
        let err = verify(&file, &Expected::cld("bytecode")).unwrap_err();
        assert!(
            matches!(err, VerifyError::BadSignature(Signed::Info)),
            "{err}"
        );
    }
}

#[test]
fn generated_cld_catches_content_damage() {
    let keys = testkeys::signing_keys();
    let file = build::cld(&build::DbSpec::new("daily", 5).signatures(4), &keys, false).unwrap();
    let trusted = testkeys::trusted();
    let find = |needle: &[u8]| {
        file.windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    // A byte of the signature list (listed with its sha256 in daily.info).
    let mut bad = file.clone();
    bad[find(b"Cvdmirror.Test") + 3] = b'X';
    let err = cvd::verify_bytes(&bad, &Expected::cld("daily"), &trusted).unwrap_err();
    assert!(
        err.to_string().contains("sha256 of member daily.hdb"),
        "{err}"
    );
    // A byte of daily.info before the DSIG line.
    let mut bad = file.clone();
    bad[find(b"daily.hdb:") + 2] = b'x';
    let err = cvd::verify_bytes(&bad, &Expected::cld("daily"), &trusted).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadSignature(Signed::Info)),
        "{err}"
    );
    // The newline that ends the DSIG line.
    let mut bad = file.clone();
    let dsig_end = find(b"DSIG:")
        + file[find(b"DSIG:")..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap();
    bad[dsig_end] = b'a';
    assert!(matches!(
        cvd::verify_bytes(&bad, &Expected::cld("daily"), &trusted),
        Err(VerifyError::Info(_))
    ));
    // The header's version (it must agree with daily.info).
    let mut bad = file.clone();
    bad[find(b":5:4:90:") + 1] = b'6';
    let err = cvd::verify_bytes(&bad, &Expected::cld("daily"), &trusted).unwrap_err();
    assert!(matches!(err, VerifyError::Mismatch(_)), "{err}");
}

#[test]
fn generated_cdiffs_verify_and_damage_is_caught() {
    let keys = testkeys::signing_keys();
    let chain = build::cdiff_chain("daily", 10, 13, &keys).unwrap();
    assert_eq!(
        chain.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [11, 12, 13]
    );
    for (version, bytes) in &chain {
        let Cdiff::Signed(signed) =
            cvd::verify_cdiff(bytes, Some(*version), &testkeys::trusted()).unwrap()
        else {
            panic!("not signed")
        };
        assert_eq!(signed.version, *version);
        assert_eq!(signed.script_len, signed.declared_script_len);
        let script = cvd::cdiff_script(bytes).unwrap();
        assert!(script.starts_with(b"OPEN daily.hdb\nADD "));
        let err = cvd::verify_cdiff(bytes, Some(*version), &official()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cdiff signature does not verify with any trusted key"
        );
        let err = cvd::verify_cdiff(bytes, Some(version + 1), &testkeys::trusted()).unwrap_err();
        assert!(matches!(err, VerifyError::WrongVersion { .. }), "{err}");
    }
    assert_eq!(
        cvd::verify_cdiff(b"", Some(12), &official()).unwrap(),
        Cdiff::Empty
    );
    let (_, bytes) = &chain[0];
    // (Cutting one byte may remove a zero digit 'a' of the fixed-width
    // signature, which ClamAV's encoding allows; cut more.)
    let err =
        cvd::verify_cdiff(&bytes[..bytes.len() - 10], None, &testkeys::trusted()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature(_)), "{err}");
    assert!(matches!(
        cvd::verify_cdiff(&bytes[..300], None, &testkeys::trusted()),
        Err(VerifyError::Truncated(_))
    ));
    // Single-byte changes all over the file are caught (the property test
    // below tries random ones).
    for at in (0..bytes.len()).step_by(5) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x04;
        assert!(
            cvd::verify_cdiff(&bad, None, &testkeys::public_keys()).is_err(),
            "byte {at}"
        );
    }
}

#[test]
fn cdiff_files_are_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("daily-3.cdiff");
    std::fs::write(
        &path,
        build::cdiff("daily", 3, &testkeys::signing_keys()).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        cvd::verify_cdiff_file(&path, Some(3), &testkeys::trusted()),
        Ok(Cdiff::Signed(_))
    ));
    std::fs::write(&path, b"").unwrap();
    assert_eq!(
        cvd::verify_cdiff_file(&path, Some(3), &testkeys::trusted()).unwrap(),
        Cdiff::Empty
    );
    let missing = cvd::verify_cdiff_file(&dir.path().join("nope"), None, &official()).unwrap_err();
    assert!(missing.is_io());
}

/// `sigtool` (Debian package clamav) is the reference verifier: it must
/// agree with ours on the genuine fixtures and on a damaged copy. This test
/// fails, rather than skips, when sigtool is missing.
#[test]
fn sigtool_agrees_on_genuine_and_damaged_fixtures() {
    let sigtool = |path: &std::path::Path| sigtool_info(path).stdout.contains("Verification OK.");
    let dir = tempfile::tempdir().unwrap();
    for version in GENUINE {
        assert!(sigtool(&genuine_path(version)));
        assert!(verify(&genuine(version), &bytecode(version)).is_ok());
        let mut damaged = genuine(version);
        let at = damaged.len() / 3;
        damaged[at] ^= 1;
        let path = dir.path().join("bytecode.cvd");
        std::fs::write(&path, &damaged).unwrap();
        assert!(!sigtool(&path));
        assert!(verify(&damaged, &bytecode(version)).is_err());
    }
}

// ---- properties ----

fn mutate(file: &[u8], at: usize, byte: u8) -> Option<Vec<u8>> {
    let mut out = file.to_vec();
    let slot = out.get_mut(at % file.len())?;
    if *slot == byte {
        return None;
    }
    *slot = byte;
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = verify(&bytes, &Expected::cvd("daily"));
        let _ = verify(&bytes, &Expected::cld("daily"));
        let _ = cvd::verify_cdiff(&bytes, None, &official());
    }

    #[test]
    fn a_header_followed_by_junk_never_panics(junk in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut file = genuine(19)[..512].to_vec();
        file.extend_from_slice(&junk);
        prop_assert!(verify(&file, &bytecode(19)).is_err());
        let mut file = GENERATED_CLD[..512].to_vec();
        file.extend_from_slice(&junk);
        prop_assert!(cvd::verify_bytes(&file, &Expected::cld("main"), &testkeys::trusted()).is_err());
    }

    #[test]
    fn mutated_genuine_cvd_never_verifies(at in any::<usize>(), byte in any::<u8>()) {
        if let Some(bad) = mutate(&genuine(19), at, byte) {
            prop_assert!(verify(&bad, &bytecode(19)).is_err());
        }
    }

    #[test]
    fn mutated_genuine_header_never_verifies(at in 0usize..512, byte in any::<u8>()) {
        if let Some(bad) = mutate(&genuine(268), at, byte) {
            prop_assert!(verify(&bad, &bytecode(268)).is_err());
        }
    }

    #[test]
    fn mutated_generated_cvd_never_verifies(at in any::<usize>(), byte in any::<u8>()) {
        if let Some(bad) = mutate(&GENERATED_CVD, at, byte) {
            prop_assert!(cvd::verify_bytes(&bad, &Expected::cvd("main"), &testkeys::trusted()).is_err());
        }
    }

    /// In a CLD only the header and member contents are authenticated (tar
    /// framing is not, in ClamAV either): mutate those.
    #[test]
    fn mutated_cld_content_never_verifies(pick in any::<usize>(), byte in any::<u8>()) {
        let file: &[u8] = &GENERATED_CLD;
        // Header, then members: [COPYING hdr+data] [info hdr][info data..][hdb hdr][hdb data..]
        let octal = |at: usize| usize::from_str_radix(std::str::from_utf8(&file[at + 124..at + 135]).unwrap(), 8).unwrap();
        let info_len = octal(512 + 1024);
        let info_start = 512 + 1024 + 512;
        let hdb_header = info_start + info_len.div_ceil(512) * 512;
        let hdb_size = octal(hdb_header);
        let mut covered: Vec<usize> = (0..512).collect();
        covered.extend(info_start..info_start + info_len);
        covered.extend(hdb_header + 512..hdb_header + 512 + hdb_size);
        let at = covered[pick % covered.len()];
        if let Some(bad) = mutate(file, at, byte) {
            prop_assert!(cvd::verify_bytes(&bad, &Expected::cld("main"), &testkeys::trusted()).is_err(), "byte {}", at);
        }
    }

    #[test]
    fn mutated_cdiff_never_verifies(at in any::<usize>(), byte in any::<u8>()) {
        if let Some(bad) = mutate(&GENERATED_CDIFF, at, byte) {
            prop_assert!(cvd::verify_cdiff(&bad, None, &testkeys::trusted()).is_err());
        }
    }
}
