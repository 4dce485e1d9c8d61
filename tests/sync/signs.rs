//! ClamAV 1.5 `.sign` files through the real `cvdmirror sync`: each policy
//! (`either`, `sign`, `both`) against each kind of upstream (both
//! signatures, only the new one, only the legacy one, a damaged or a
//! forged `.sign`), with the promises of every fault test: a rejected file
//! leaves the previous set served byte for byte and says why; plus
//! back-fill, the grace period of a replaced CVD's `.sign`, and a reader
//! racing the publish that must never see a file before its `.sign`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cvdmirror::cvd::build::sign::{PkiOptions, TestPki};
use cvdmirror::cvd::build::{self, DbSpec, LegacySignature};
use cvdmirror::cvd::sign::cvd_sign_name;

use crate::support::world::*;

/// `bytecode` `version` without the legacy header signature, as upstream
/// has announced it will publish: `X:X` for md5 and signature, or the md5
/// and `X` (what `sigtool --unsigned` writes).
fn sign_only_cvd(version: u32, form: LegacySignature) -> Vec<u8> {
    build::cvd(
        &DbSpec::new(DB, version).size(CVD_SIZE).legacy_header(form),
        keys(),
    )
    .unwrap()
}

/// Healthy at 271; upstream moves to 272 with `bytecode.cvd` replaced by a
/// CVD that has only a `.sign`.
fn world_with_a_sign_only_release(form: LegacySignature) -> (World, Mirror, Snapshot) {
    let (world, mirror) = healthy();
    let before = mirror.snapshot();
    world.release(271, 272, CVD_SIZE);
    world.put_cvd(&sign_only_cvd(272, form));
    (world, mirror, before)
}

#[test]
fn a_cvd_with_only_a_sign_is_published_under_either_and_sign() {
    for (policy, form) in [
        ("either", LegacySignature::Absent),
        ("sign", LegacySignature::Absent),
        ("either", LegacySignature::Md5Only),
    ] {
        let (world, mirror, _) = world_with_a_sign_only_release(form);
        let mirror = mirror.arg("--signatures").arg(policy);
        let run = mirror.sync(&world);
        run.assert_ok();
        assert_eq!(mirror.version(), Some(272), "{policy}\n{run}");
        assert_eq!(
            std::fs::read(mirror.root.join("bytecode.cvd")).unwrap(),
            sign_only_cvd(272, form),
            "{policy}"
        );
        assert!(
            mirror.root.join(cvd_sign_name(DB, 272)).exists(),
            "{policy}: the .sign is published with its CVD\n{run}"
        );
        check_served(&mirror.root, Some(271)).unwrap_or_else(|e| panic!("{policy}: {e}\n{run}"));
        let signer = pki().signer_name();
        assert!(
            run.stdout
                .contains(&format!("signatures: sign (.sign by {signer})")),
            "the summary says which signatures the published CVD carries\n{run}"
        );
    }
}

#[test]
fn a_cvd_with_only_a_sign_is_refused_under_both() {
    let (world, mirror, before) = world_with_a_sign_only_release(LegacySignature::Absent);
    let mirror = mirror.arg("--signatures").arg("both");
    let run = mirror.sync(&world);
    run.assert_failed(&["bytecode.cvd", "legacy signature is required"]);
    assert_preserved(&before, &mirror, &run);
    assert_eq!(mirror.version(), Some(271), "{run}");
}

#[test]
fn an_invalid_sign_rejects_a_cvd_whose_legacy_signature_is_fine() {
    let (world, mirror) = healthy();
    let before = mirror.snapshot();
    world.release(271, 272, CVD_SIZE);
    // A genuine .sign, but of another file: clients would refuse the CVD.
    world
        .up
        .put(&cvd_sign_name(DB, 272), &sign(&cvd(271, CVD_SIZE)));
    let run = mirror.sync(&world);
    run.assert_failed(&["bytecode.cvd", "invalid signature", "would refuse"]);
    assert_preserved(&before, &mirror, &run);
    assert_eq!(mirror.version(), Some(271), "{run}");
    assert!(!mirror.root.join(cvd_sign_name(DB, 272)).exists(), "{run}");

    // Upstream repairs its .sign: the next pass converges.
    world.put_cvd(&cvd(272, CVD_SIZE));
    let healed = mirror.sync(&world);
    healed.assert_ok();
    assert_eq!(mirror.version(), Some(272), "{healed}");
    check_served(&mirror.root, Some(271)).unwrap();
}

#[test]
fn a_sign_from_an_untrusted_root_rejects_the_cdiff_and_holds_the_cvd() {
    let (world, mirror) = healthy();
    let before = mirror.snapshot();
    world.release(271, 272, CVD_SIZE);
    let stranger = TestPki::generate_with(&PkiOptions::default()).unwrap();
    world.up.put(
        &format!("{}.sign", cdiff_name(272)),
        &stranger.sign(&cdiff(272)).unwrap(),
    );
    let run = mirror.sync(&world);
    run.assert_failed(&["bytecode-272.cdiff", "invalid signature"]);
    assert_preserved(&before, &mirror, &run);
    assert_eq!(
        mirror.version(),
        Some(271),
        "the CVD waits for its cdiff\n{run}"
    );
}

#[test]
fn the_sign_policy_requires_a_sign_and_says_so() {
    let (world, mirror) = healthy();
    let before = mirror.snapshot();
    world.release_unsigned(271, 272, CVD_SIZE);
    let mirror = mirror.arg("--signatures").arg("sign");
    let run = mirror.sync(&world);
    run.assert_failed(&["bytecode-272.cdiff", "upstream has none"]);
    assert_preserved(&before, &mirror, &run);
}

#[test]
fn an_unusable_sign_is_not_published_and_the_legacy_signature_carries_the_file() {
    let (world, mirror) = healthy();
    world.release(271, 272, CVD_SIZE);
    // A minimum feature level below 230 makes ClamAV ignore the file.
    world.up.put(
        &format!("{}.sign", cdiff_name(272)),
        format!("{SIGN_MAGIC}\n229::pkcs7-pem:AAAA\n").as_bytes(),
    );
    world
        .up
        .put(&cvd_sign_name(DB, 272), b"<html>not a signature</html>");
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(mirror.version(), Some(272), "{run}");
    let served = mirror.snapshot();
    assert!(!served.contains_key("bytecode-272.cdiff.sign"), "{run}");
    assert!(!served.contains_key("bytecode-272.cvd.sign"), "{run}");
    assert!(
        run.stderr.contains("signature file not published"),
        "the operator is told\n{run}"
    );
}

#[test]
fn missing_signs_are_back_filled_for_a_mirror_upgraded_from_an_older_version() {
    // What an older cvdmirror left: the files, no .sign, no state.
    let (world, synced) = healthy();
    let mirror = Mirror::new();
    for (name, _) in synced.snapshot() {
        if !name.ends_with(".sign") {
            std::fs::copy(synced.root.join(&name), mirror.root.join(&name)).unwrap();
        }
    }
    let run = mirror.sync(&world);
    run.assert_ok();
    let served = mirror.snapshot();
    for name in [
        "bytecode-271.cvd.sign",
        "bytecode-269.cdiff.sign",
        "bytecode-270.cdiff.sign",
        "bytecode-271.cdiff.sign",
    ] {
        assert!(served.contains_key(name), "{name} back-filled\n{run}");
    }
    check_served(&mirror.root, None).unwrap();
    assert_each_file_once(&run);
    // Nothing more to fetch: the next pass asks for nothing but DNS.
    let again = mirror.sync(&world);
    again.assert_ok();
    assert!(again.requests.is_empty(), "{again}");
}

#[test]
fn a_replaced_cvds_sign_stays_for_its_grace_period() {
    let (world, mirror) = healthy();
    world.release(271, 272, CVD_SIZE);
    let run = mirror.sync(&world);
    run.assert_ok();
    assert!(
        mirror.root.join(cvd_sign_name(DB, 271)).exists(),
        "clients still downloading 271 ask for its .sign\n{run}"
    );
    assert!(mirror.root.join(cvd_sign_name(DB, 272)).exists(), "{run}");

    // With no grace, the next pass retires it.
    std::fs::write(
        mirror.dir.path().join("cvdmirror.toml"),
        format!("{FAST_CONFIG}sign_grace = \"0s\"\n"),
    )
    .unwrap();
    let run = mirror.sync(&world);
    run.assert_ok();
    assert!(!mirror.root.join(cvd_sign_name(DB, 271)).exists(), "{run}");
    assert!(mirror.root.join(cvd_sign_name(DB, 272)).exists(), "{run}");
}

#[test]
fn a_reader_racing_the_publish_never_sees_a_file_before_its_sign() {
    let (world, mirror) = healthy();
    world.release(271, 275, 2 * 1024 * 1024);
    let root = mirror.root.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut looks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                looks += 1;
                // Read the CVD's header first, then look for its .sign: the
                // .sign was renamed into place before the CVD was.
                if let Ok(bytes) = std::fs::read(root.join("bytecode.cvd"))
                    && let Ok(header) = cvdmirror::cvd::Header::parse(&bytes)
                    && !root.join(cvd_sign_name(DB, header.version)).exists()
                {
                    return Err(format!(
                        "bytecode.cvd {} served without its .sign",
                        header.version
                    ));
                }
                for v in 272..=275 {
                    let name = cdiff_name(v);
                    if root.join(&name).exists() && !root.join(format!("{name}.sign")).exists() {
                        return Err(format!("{name} served without its .sign"));
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(looks)
        })
    };
    let run = mirror.sync(&world);
    stop.store(true, Ordering::Relaxed);
    let looks = reader
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{run}"));
    run.assert_ok();
    assert_eq!(mirror.version(), Some(275), "{run}");
    assert!(looks > 10, "the reader looked only {looks} times");
}
