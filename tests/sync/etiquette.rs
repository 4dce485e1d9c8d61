//! Upstream etiquette, read from the fake upstream's request log: a mirror
//! that hammers the CDN gets banned and takes its clients down with it.
//!
//! Every run (see `world::Mirror::sync`) already asserts a versioned
//! `cvdmirror/` User-Agent on each request and, in DNS mode, no
//! `Range: bytes=0-511` header checks; these tests add what needs a scenario:
//! cool-downs that survive restarts, the 403 stop, resumes, and one request
//! per file per successful pass.

use crate::support::upstream::Fault;
use crate::support::world::*;

#[test]
fn a_successful_pass_requests_each_file_once() {
    let (world, mirror) = healthy();
    world.release(271, 274, CVD_SIZE);
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_each_file_once(&run);
    assert_no_header_checks(&run);
    // Only what was missing: three cdiffs, their optional signatures, the CVD and its signature.
    let files: Vec<&str> = run.requests.iter().map(|r| r.file()).collect();
    assert_eq!(
        files,
        [
            "bytecode-272.cdiff",
            "bytecode-272.cdiff.sign",
            "bytecode-273.cdiff",
            "bytecode-273.cdiff.sign",
            "bytecode-274.cdiff",
            "bytecode-274.cdiff.sign",
            "bytecode.cvd",
            "bytecode-274.cvd.sign",
        ],
        "cdiffs first, the CVD last\n{run}"
    );
    // Nothing new upstream: nothing requested at all.
    let again = mirror.sync(&world);
    again.assert_ok();
    assert!(again.requests.is_empty(), "{again}");
}

#[test]
fn the_first_pass_of_a_fresh_mirror_requests_each_file_once() {
    let world = World::new();
    world.release(267, 271, CVD_SIZE);
    let mirror = Mirror::new();
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_each_file_once(&run);
    let ua = run.requests[0].header("user-agent").unwrap();
    assert!(
        ua.starts_with(&format!("cvdmirror/{}", env!("CARGO_PKG_VERSION"))),
        "{ua}"
    );
}

#[test]
fn rate_limit_cool_down_without_retry_after_survives_restarts() {
    let (world, mirror) = healthy();
    world.release(271, 272, CVD_SIZE);
    world.up.fault("bytecode.cvd", Fault::RateLimited(None));
    let first = mirror.sync(&world);
    first.assert_failed(&["bytecode.cvd", "429"]);
    assert_eq!(first.requests_for("bytecode.cvd").len(), 1, "{first}");
    // Upstream is fine again, but the 4 h default cool-down must hold.
    world.up.clear_fault("bytecode.cvd");
    let second = mirror.sync(&world);
    second.assert_failed(&["bytecode.cvd", "cool"]);
    assert!(
        second.requests_for("bytecode.cvd").is_empty(),
        "a file cooling down after 429 was requested again\n{second}"
    );
    assert_eq!(mirror.version(), Some(271));
}

#[test]
fn rate_limit_cool_down_with_a_far_http_date_survives_restarts() {
    let (world, mirror) = healthy();
    world.release(271, 272, CVD_SIZE);
    let until = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    world.up.fault(
        "bytecode.cvd",
        Fault::RateLimited(Some(httpdate::fmt_http_date(until))),
    );
    mirror.sync(&world).assert_failed(&["429"]);
    world.up.clear_fault("bytecode.cvd");
    let second = mirror.sync(&world);
    second.assert_failed(&["cool"]);
    assert!(second.requests_for("bytecode.cvd").is_empty(), "{second}");
}

#[test]
fn forbidden_stops_every_request_on_the_next_run() {
    let (world, mirror) = healthy();
    world.release(271, 272, CVD_SIZE);
    world.up.fault(&cdiff_name(272), Fault::Status(403));
    let first = mirror.sync(&world);
    first.assert_failed(&["403"]);
    let after_403: Vec<_> = first
        .requests
        .iter()
        .skip_while(|r| r.status != 403)
        .skip(1)
        .collect();
    assert!(
        after_403.is_empty(),
        "requests after a 403 in the same pass\n{first}"
    );
    world.up.clear_fault(&cdiff_name(272));
    let second = mirror.sync(&world);
    second.assert_failed(&["403"]);
    assert!(
        second.requests.is_empty(),
        "no request at all for 24 h after a 403\n{second}"
    );
}

#[test]
fn resume_after_a_stall_uses_range_and_if_range() {
    let (world, mirror) = healthy();
    world.release(271, 272, CVD_SIZE);
    world.up.fault("bytecode.cvd", Fault::Stall(64 * 1024));
    mirror.sync(&world).assert_failed(&["bytecode.cvd"]);
    world.up.clear_fault("bytecode.cvd");
    let run = mirror.sync(&world);
    run.assert_ok();
    let cvd_requests = run.requests_for("bytecode.cvd");
    assert_eq!(cvd_requests.len(), 1, "{run}");
    assert_eq!(
        cvd_requests[0].header("range"),
        Some("bytes=65536-"),
        "{run}"
    );
    assert_eq!(
        cvd_requests[0].header("if-range").map(str::to_owned),
        world.up.etag("bytecode.cvd"),
        "{run}"
    );
    assert_eq!(cvd_requests[0].status, 206, "{run}");
}

#[test]
fn a_partial_file_of_an_older_version_is_not_spliced_onto_a_newer_one() {
    let (world, mirror) = healthy();
    world.release(271, 272, CVD_SIZE);
    world.up.fault("bytecode.cvd", Fault::Reset(64 * 1024));
    mirror.sync(&world).assert_failed(&["bytecode.cvd"]);
    // Upstream moves on before the resume: If-Range no longer matches.
    world.up.clear_fault("bytecode.cvd");
    world.release(272, 273, CVD_SIZE);
    let run = mirror.sync(&world);
    run.assert_ok();
    let cvd_requests = run.requests_for("bytecode.cvd");
    assert_eq!(cvd_requests.len(), 1, "{run}");
    assert_eq!(
        cvd_requests[0].status, 200,
        "a stale partial must restart\n{run}"
    );
    assert_eq!(mirror.version(), Some(273));
    check_served(&mirror.root, Some(271)).unwrap();
}

#[test]
fn http_version_checks_read_only_the_header() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let mirror = Mirror::new().arg("--version-check").arg("http");
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(mirror.version(), Some(271));
    let checks: Vec<_> = run
        .requests
        .iter()
        .filter(|r| r.header("range") == Some("bytes=0-511"))
        .collect();
    assert_eq!(checks.len(), 1, "{run}");
    // Up to date: one header check, nothing else.
    let again = mirror.sync(&world);
    again.assert_ok();
    assert_eq!(again.requests.len(), 1, "{again}");
}

#[test]
fn http_version_check_honours_403() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let mirror = Mirror::new().arg("--version-check").arg("http");
    world.up.fault("bytecode.cvd", Fault::Status(403));
    let first = mirror.sync(&world);
    first.assert_failed(&["403"]);
    let second = mirror.sync(&world);
    assert!(
        second.requests.is_empty(),
        "a 403 on the HTTP version check must stop requests for 24 h like any 403\n{second}"
    );
}

#[test]
fn http_version_check_honours_429() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let mirror = Mirror::new().arg("--version-check").arg("http");
    world
        .up
        .fault("bytecode.cvd", Fault::RateLimited(Some("3600".into())));
    let first = mirror.sync(&world);
    first.assert_failed(&["429"]);
    world.up.clear_fault("bytecode.cvd");
    let second = mirror.sync(&world);
    assert!(
        second.requests_for("bytecode.cvd").is_empty(),
        "a 429 on the HTTP version check must cool bytecode.cvd down\n{second}"
    );
}

#[test]
fn request_budget_caps_requests_per_file_per_hour() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let mirror = Mirror::with_config(
        r#"
[sync]
attempts = 1
stall_timeout = "1s"
backfill = 1
max_requests_per_file_per_hour = 2
"#,
    );
    world.up.fault("bytecode.cvd", Fault::Status(500));
    for _ in 0..3 {
        mirror.sync(&world).assert_failed(&["bytecode.cvd"]);
    }
    let total = world
        .up
        .log()
        .iter()
        .filter(|r| r.file() == "bytecode.cvd")
        .count();
    assert_eq!(
        total,
        2,
        "budget of 2 per hour\n{}",
        crate::support::upstream::show(&world.up.log())
    );
}
