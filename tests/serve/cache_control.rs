//! `Cache-Control` for the HTTP caches between a mirror and its clients:
//! `daily.cvd` and other names that change in place must be revalidated
//! (a stale one is the worst thing a cache could serve), versioned names
//! (cdiffs, `.sign`) never change and may be kept, and a `404` for a cdiff
//! not published yet must not be reused without asking. `304`s carry the
//! same value as the `200` they stand for.

use crate::support::{TestServer, fixture};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn server(config: Option<&str>) -> TestServer {
    let mut b = TestServer::builder()
        .file("bytecode.cvd", &fixture("bytecode-268.cvd"))
        .file("daily-27000.cdiff", b"ClamAV-Diff:27000:1:")
        .file("daily-27000.cdiff.sign", b"#clamsign-1.0\n")
        .file("bytecode-268.cvd.sign", b"#clamsign-1.0\n")
        .file("dns.txt", b"txt");
    if let Some(toml) = config {
        b = b.config(toml);
    }
    b.start()
}

#[test]
fn changing_names_revalidate_versioned_names_are_immutable_and_404s_revalidate() {
    let s = server(None);
    for (path, want) in [
        ("/bytecode.cvd", "no-cache"),
        ("/dns.txt", "no-cache"),
        ("/daily-27000.cdiff", IMMUTABLE),
        ("/daily-27000.cdiff.sign", IMMUTABLE),
        ("/bytecode-268.cvd.sign", IMMUTABLE),
    ] {
        let full = s.get(path, &[]);
        assert_eq!(full.status, 200, "{path}");
        assert_eq!(full.header("cache-control"), Some(want), "{path}");
        // freshclam's header check, and a cache's revalidation.
        let range = s.get(path, &[("Range", "bytes=0-3")]);
        assert_eq!(range.status, 206, "{path}");
        assert_eq!(range.header("cache-control"), Some(want), "{path}");
        let etag = full.header("etag").unwrap().to_owned();
        let revalidated = s.get(path, &[("If-None-Match", &etag)]);
        assert_eq!(revalidated.status, 304, "{path}");
        assert_eq!(revalidated.header("cache-control"), Some(want), "{path}");
    }
    let missing = s.get("/daily-27001.cdiff", &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("cache-control"), Some("no-cache"));
}

#[test]
fn values_are_configurable_and_empty_sends_none() {
    let s = server(Some(
        "[cache_control]\nchanging = \"max-age=60, must-revalidate\"\nversioned = \"\"\nmissing = \"no-store\"\n",
    ));
    assert_eq!(
        s.get("/bytecode.cvd", &[]).header("cache-control"),
        Some("max-age=60, must-revalidate")
    );
    assert_eq!(
        s.get("/daily-27000.cdiff", &[]).header("cache-control"),
        None
    );
    assert_eq!(
        s.get("/nothing.cdiff", &[]).header("cache-control"),
        Some("no-store")
    );
}

#[test]
fn a_bad_value_refuses_to_start_and_names_its_line() {
    let err = TestServer::builder()
        .config("[cache_control]\n\nchanging = \"no-cache\\u0001\"\n")
        .start_err();
    assert!(
        err.contains("line 3") && err.contains("cache_control.changing"),
        "{err}"
    );
}
