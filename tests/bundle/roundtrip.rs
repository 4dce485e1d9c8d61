//! The good path: a mirror exported, imported into an empty root (the
//! served set identical, byte for byte, and verified), again (nothing to
//! do), shown with `--dry-run`, and read by `sync --upstream file:///…`
//! as a bundle and as a plain directory.

use std::process::Command;

use crate::kit::{self, Parts, Trust, setup};
use crate::support::world::*;

#[test]
fn export_then_import_into_an_empty_root_serves_the_same_bytes() {
    let (_world, source) = healthy();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("mirror.tar");
    kit::export(&source.root, &bundle).assert_ok().says(&[
        "wrote",
        "bytecode",
        "271",
        "3 cdiffs (269-271)",
        "4 .sign files",
        "8 files",
    ]);

    // Self-describing: any tar lists it, the manifest first.
    let listed = Command::new("tar").arg("tf").arg(&bundle).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let names: Vec<&str> = listed.lines().collect();
    assert_eq!(names.first(), Some(&"manifest.json"), "{listed}");
    assert_eq!(names.last(), Some(&"bytecode.cvd"), "{listed}");
    let manifest = Parts::read(&bundle).manifest();
    assert_eq!(manifest.databases["bytecode"].version, 271);
    assert_eq!(manifest.files.len(), 8);
    assert!(manifest.producer.starts_with("cvdmirror "), "{manifest:?}");

    let target = tempfile::tempdir().unwrap();
    let out = kit::import(&bundle, target.path(), Trust::Test, &[]);
    out.assert_ok().says(&[
        "bytecode",
        "271",
        "updated from nothing",
        "signatures: both",
    ]);
    assert_eq!(snapshot(target.path()), source.snapshot(), "{out}");
    assert_eq!(check_served(target.path(), None), Ok(Some(271)));
    assert!(
        !target.path().join(".cvdmirror/import").exists(),
        "the scratch directory stayed"
    );

    // Again: nothing to do, nothing changes.
    let out = kit::import(&bundle, target.path(), Trust::Test, &[]);
    out.assert_ok().says(&["up to date"]);
    assert_eq!(snapshot(target.path()), source.snapshot(), "{out}");
}

#[test]
fn dry_run_shows_the_bundle_and_changes_nothing() {
    let (target, dir, bundle) = setup();

    let before = target.snapshot();
    let out = kit::import(&bundle, &target.root, Trust::Test, &["--dry-run"]);
    out.assert_ok().says(&[
        "written ",
        "by cvdmirror ",
        "bytecode",
        "version 271",
        "3 cdiffs (269-271)",
        "8 files",
        "sizes and SHA-256 match the manifest",
        "would update 269 -> 271",
        "nothing was published (--dry-run)",
    ]);
    assert_eq!(target.snapshot(), before, "{out}");

    // Into a root that does not exist yet: shown and verified, nothing created.
    let missing = dir.path().join("not-yet");
    let out = kit::import(&bundle, &missing, Trust::Test, &["--dry-run"]);
    out.assert_ok()
        .says(&["would publish 271 (none published yet)"]);
    assert!(!missing.exists(), "{out}");

    // A database the bundle lacks is named.
    kit::import(
        &bundle,
        &target.root,
        Trust::Test,
        &["--dry-run", "--db", "daily"],
    )
    .assert_failed(&["no database daily", "bytecode"]);
}

#[test]
fn sync_reads_a_bundle_or_a_directory_by_file_url() {
    let (_world, source) = healthy();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("mirror.tar");
    kit::export(&source.root, &bundle).assert_ok();

    let target = tempfile::tempdir().unwrap();
    let out = kit::sync_from(&kit::file_url(&bundle), target.path());
    out.assert_ok().says(&["bytecode", "271"]);
    assert_eq!(snapshot(target.path()), source.snapshot(), "{out}");
    // Passes from a bundle spend no request budget: many in a row all work.
    for _ in 0..12 {
        kit::sync_from(&kit::file_url(&bundle), target.path()).assert_ok();
    }

    // A copy of a mirror's root, no manifest: the engine's checks alone.
    let copy = tempfile::tempdir().unwrap();
    for name in source.snapshot().keys() {
        std::fs::copy(source.root.join(name), copy.path().join(name)).unwrap();
    }
    let target = tempfile::tempdir().unwrap();
    let out = kit::sync_from(&kit::file_url(copy.path()), target.path());
    out.assert_ok();
    assert_eq!(snapshot(target.path()), source.snapshot(), "{out}");

    // A bundle that is not there is named.
    let gone = dir.path().join("gone.tar");
    kit::sync_from(&format!("file://{}", gone.display()), target.path())
        .assert_failed(&[&gone.display().to_string(), "No such file"]);
    kit::import(&gone, target.path(), Trust::Test, &[]).assert_failed(&[
        &gone.display().to_string(),
        "No such file",
        "nothing was imported",
    ]);
}
