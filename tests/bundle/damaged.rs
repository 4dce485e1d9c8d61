//! A bad bundle changes nothing: each damage below, imported into a root
//! that already serves an older set, fails with a message saying what is
//! wrong, and the root serves exactly what it served before. Damage the
//! manifest catches (a flipped byte, a missing file, a lying hash or
//! version) and damage only signature verification catches (a forger who
//! rewrote the manifest to match) are both refused.

use std::path::{Path, PathBuf};

use crate::kit::{self, Parts, Trust, setup};
use crate::support::world::*;

fn flip(bytes: &mut [u8], offset: usize) {
    bytes[offset] ^= 0x01;
}

/// Imports `bundle` into `target` and asserts it failed saying `words`
/// and changed nothing that is served.
fn refused(target: &Mirror, bundle: &Path, words: &[&str]) {
    let before = target.snapshot();
    let out = kit::import(bundle, &target.root, Trust::Test, &[]);
    out.assert_failed(words);
    assert_eq!(
        target.snapshot(),
        before,
        "a refused bundle changed the root\n{out}"
    );
    assert_eq!(target.version(), Some(269));
    assert!(
        !target.root.join(".cvdmirror/import").exists(),
        "the scratch directory stayed\n{out}"
    );
    // A dry run says the same.
    kit::import(bundle, &target.root, Trust::Test, &["--dry-run"]).assert_failed(words);
    assert_eq!(target.snapshot(), before);
}

#[test]
fn a_damaged_or_lying_bundle_changes_nothing() {
    let (target, dir, good) = setup();
    let variant = |name: &str, damage: &dyn Fn(&mut Parts)| -> PathBuf {
        let mut parts = Parts::read(&good);
        damage(&mut parts);
        parts.write(&dir.path().join(name))
    };

    // A flipped byte in the CVD: its SHA-256 no longer matches.
    let bundle = variant("flipped.tar", &|p| flip(p.get_mut("bytecode.cvd"), 5000));
    refused(&target, &bundle, &["bytecode.cvd", "SHA-256", "nothing in"]);

    // The same, with the manifest rewritten to match: the signature check catches it.
    let bundle = variant("forged-cvd.tar", &|p| {
        flip(p.get_mut("bytecode.cvd"), 5000);
        p.rehash("bytecode.cvd");
    });
    refused(&target, &bundle, &["bytecode.cvd", "rejected"]);

    // A forged cdiff (it would have been published first by a plain sync).
    let bundle = variant("forged-cdiff.tar", &|p| {
        let cdiff = p.get_mut("bytecode-270.cdiff");
        let at = cdiff.len() / 2;
        flip(cdiff, at);
        p.rehash("bytecode-270.cdiff");
    });
    refused(&target, &bundle, &["bytecode-270.cdiff", "rejected"]);

    // A forged .sign: another base64 digit near the end, in the signature
    // value (flipping a bit instead can make the text no base64 at all,
    // which is refused as unusable, with another message).
    let bundle = variant("forged-sign.tar", &|p| {
        let sign = p.get_mut("bytecode-271.cdiff.sign");
        let at = sign.len() - 40;
        let base64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
        assert!(base64(sign[at]), "not base64 at {at}");
        sign[at] = if sign[at] == b'A' { b'B' } else { b'A' };
        p.rehash("bytecode-271.cdiff.sign");
    });
    refused(&target, &bundle, &["bytecode-271.cdiff", "rejected"]);

    // A .sign that is not a signature at all: refused, saying why.
    let bundle = variant("garbage-sign.tar", &|p| {
        *p.get_mut("bytecode-271.cdiff.sign") = b"#clamsign-1.0:garbage\n".to_vec();
        p.rehash("bytecode-271.cdiff.sign");
    });
    refused(
        &target,
        &bundle,
        &["bytecode-271.cdiff.sign: rejected", "unusable"],
    );

    // A cdiff the manifest lists is missing.
    let bundle = variant("missing.tar", &|p| {
        p.entries.retain(|(n, _)| n != "bytecode-270.cdiff");
    });
    refused(
        &target,
        &bundle,
        &[
            "bytecode-270.cdiff",
            "listed in the manifest but not in the bundle",
        ],
    );

    // The manifest lies about a hash.
    let bundle = variant("wrong-hash.tar", &|p| {
        let mut m = p.manifest();
        m.files
            .iter_mut()
            .find(|f| f.name == "bytecode-269.cdiff")
            .unwrap()
            .sha256 = "ab".repeat(32);
        p.set_manifest(&m);
    });
    refused(
        &target,
        &bundle,
        &["bytecode-269.cdiff", "SHA-256", "differs from the manifest"],
    );

    // The manifest lies about the version.
    let bundle = variant("wrong-version.tar", &|p| {
        let mut m = p.manifest();
        m.databases.get_mut("bytecode").unwrap().version = 272;
        for f in m
            .files
            .iter_mut()
            .filter(|f| f.kind == cvdmirror::sync::bundle::Kind::Cvd)
        {
            f.version = 272;
        }
        m.files.retain(|f| f.name != "bytecode-271.cvd.sign");
        p.set_manifest(&m);
        p.entries.retain(|(n, _)| n != "bytecode-271.cvd.sign");
    });
    refused(
        &target,
        &bundle,
        &[
            "bytecode.cvd",
            "its header says version 271, the manifest says 272",
        ],
    );

    // A file the manifest does not list.
    let bundle = variant("unlisted.tar", &|p| {
        p.entries
            .push(("bytecode-268.cdiff".into(), cdiff(268).to_vec()));
    });
    refused(
        &target,
        &bundle,
        &["bytecode-268.cdiff", "not listed in its manifest"],
    );

    // A copy cut short, inside the CVD.
    let bundle = dir.path().join("truncated.tar");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&bundle, &bytes[..bytes.len() - 150_000]).unwrap();
    refused(&target, &bundle, &["bytecode.cvd", "truncated"]);

    // Not a bundle at all.
    let bundle = dir.path().join("junk.tar");
    std::fs::write(&bundle, vec![0x5a; 4096]).unwrap();
    refused(&target, &bundle, &["not a cvdmirror bundle"]);

    // And after all that, the good bundle imports.
    let out = kit::import(&good, &target.root, Trust::Test, &[]);
    out.assert_ok().says(&["updated from 269"]);
    assert_eq!(
        check_served(&target.root, Some(269)),
        Ok(Some(271)),
        "{out}"
    );
}
