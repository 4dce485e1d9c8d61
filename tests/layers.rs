//! The layering of the workspace (docs/architecture.md), checked on every
//! test run: formats → exchange → components → application. Cargo already
//! refuses a cycle between crates; this refuses an edge that points up a
//! layer (a format that learns about requests, a component that reads the
//! application's configuration), which Cargo would accept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

const LAYERS: [&str; 4] = ["formats", "exchange", "component", "application"];

/// Each workspace crate's name, its layer's rank, and the workspace crates
/// it depends on (normal dependencies: tests may reach further).
fn workspace() -> BTreeMap<String, (usize, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut manifests = vec![root.join("Cargo.toml")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        manifests.push(entry.unwrap().path().join("Cargo.toml"));
    }
    let mut crates = BTreeMap::new();
    for path in manifests {
        let text = std::fs::read_to_string(&path).unwrap();
        let manifest: toml::Table = text.parse().unwrap();
        let package = manifest["package"].as_table().unwrap();
        let name = package["name"].as_str().unwrap().to_owned();
        let layer = package
            .get("metadata")
            .and_then(|m| m.get("cvdmirror"))
            .and_then(|m| m.get("layer"))
            .and_then(|l| l.as_str())
            .unwrap_or_else(|| panic!("{}: no [package.metadata.cvdmirror] layer", path.display()));
        let rank = LAYERS
            .iter()
            .position(|l| *l == layer)
            .unwrap_or_else(|| panic!("{}: unknown layer {layer:?}", path.display()));
        let deps = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.keys()
                    .filter(|k| k.starts_with("cvdmirror"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        crates.insert(name, (rank, deps));
    }
    crates
}

#[test]
fn every_dependency_points_down_the_layers() {
    let crates = workspace();
    assert!(crates.len() >= 10, "{crates:?}");
    let mut up = Vec::new();
    for (name, (rank, deps)) in &crates {
        for dep in deps {
            let (dep_rank, _) = crates
                .get(dep)
                .unwrap_or_else(|| panic!("{name} depends on {dep}, not in the workspace"));
            // Components may use one another (Cargo keeps that acyclic);
            // every other edge must go to a lower layer.
            let allowed = dep_rank < rank || (*rank == 2 && *dep_rank == 2);
            if !allowed {
                up.push(format!(
                    "{name} ({}) -> {dep} ({})",
                    LAYERS[*rank], LAYERS[*dep_rank]
                ));
            }
        }
    }
    assert!(up.is_empty(), "dependencies against the layering: {up:#?}");
    let (app, _) = &crates["cvdmirror"];
    assert_eq!(LAYERS[*app], "application");
    assert!(
        crates.values().filter(|(rank, _)| *rank == 3).count() == 1,
        "one application crate"
    );
}
