//! Fault tests: from a healthy published set, upstream advances one version
//! with one fault injected. Each pass must fail loudly (non-zero exit, the
//! reason on stderr) and leave every previously served file byte for byte
//! (new verified cdiffs may appear: they only help clients), and once the
//! fault is gone the next pass must converge.

use cvdmirror::cvd::build::{self, DbSpec};
use cvdmirror::cvd::testkeys::SigningKeys;

use crate::support::upstream::Fault;
use crate::support::world::*;

/// Keys that are not trusted for the role they sign in (each is a genuine
/// test key, used where the mirror expects another).
fn rogue_keys() -> SigningKeys {
    let k = keys();
    SigningKeys {
        cvd: k.info.clone(),
        info: k.cdiff.clone(),
        cdiff: k.info.clone(),
    }
}

/// The outcome of [`fault_case`]: the failed pass and the healing one.
struct Case {
    world: World,
    mirror: Mirror,
    failed: Run,
    healed: Run,
}

/// Healthy at 271, upstream advances to 272 with `inject` applied; the pass
/// must fail naming `words`; after `heal` the next pass converges on 272.
fn fault_case(
    config: Option<&str>,
    inject: impl FnOnce(&World),
    words: &[&str],
    heal: impl FnOnce(&World, &Run),
) -> Case {
    let (world, mirror) = healthy();
    let mirror = match config {
        Some(toml) => {
            std::fs::write(mirror.dir.path().join("cvdmirror.toml"), toml).unwrap();
            mirror
        }
        None => mirror,
    };
    let before = mirror.snapshot();
    world.release(271, 272, CVD_SIZE);
    inject(&world);
    let failed = mirror.sync(&world);
    failed.assert_failed(words);
    assert_preserved(&before, &mirror, &failed);
    assert_eq!(mirror.version(), Some(271), "{failed}");
    check_served(&mirror.root, None).unwrap_or_else(|e| panic!("{e}\n{failed}"));

    heal(&world, &failed);
    let healed = mirror.sync(&world);
    healed.assert_ok();
    assert_eq!(mirror.version(), Some(272), "{healed}");
    assert_eq!(
        std::fs::read(mirror.root.join("bytecode.cvd")).unwrap(),
        *cvd(272, CVD_SIZE),
        "{healed}"
    );
    assert!(mirror.cdiffs().ends_with(&[270, 271, 272]), "{healed}");
    check_served(&mirror.root, Some(271)).unwrap_or_else(|e| panic!("{e}\n{healed}"));
    Case {
        world,
        mirror,
        failed,
        healed,
    }
}

fn clear(name: &'static str) -> impl FnOnce(&World, &Run) {
    move |w: &World, _: &Run| w.up.clear_fault(name)
}

fn restore_cvd(w: &World, _: &Run) {
    w.up.put("bytecode.cvd", &cvd(272, CVD_SIZE));
}

fn restore_cdiff(w: &World, _: &Run) {
    w.up.put(&cdiff_name(272), &cdiff(272));
}

#[test]
fn truncated_cvd_is_rejected_then_resumed() {
    let case = fault_case(
        None,
        |w| w.up.fault("bytecode.cvd", Fault::Truncate(100_000)),
        &["bytecode.cvd"],
        clear("bytecode.cvd"),
    );
    // The cdiff was verified and published even though the CVD failed.
    assert!(case.mirror.cdiffs().contains(&272));
    let resumed = case.healed.requests_for("bytecode.cvd");
    assert_eq!(resumed.len(), 1, "{}", case.healed);
    assert_eq!(
        resumed[0].header("range"),
        Some("bytes=100000-"),
        "a partial download must be resumed\n{}",
        case.healed
    );
    assert_eq!(
        resumed[0].header("if-range").map(str::to_owned),
        case.world.up.etag("bytecode.cvd"),
        "resume must be conditional on the same file\n{}",
        case.healed
    );
    assert_eq!(resumed[0].status, 206);
}

#[test]
fn flipped_byte_in_cvd_is_rejected() {
    fault_case(
        None,
        |w| {
            let mut bytes = cvd(272, CVD_SIZE).to_vec();
            let i = bytes.len() / 2;
            bytes[i] ^= 0x20;
            w.up.put("bytecode.cvd", &bytes);
        },
        &["bytecode.cvd", "rejected"],
        restore_cvd,
    );
}

#[test]
fn cvd_signed_with_an_untrusted_key_is_rejected() {
    fault_case(
        None,
        |w| {
            let bytes = build::cvd(&DbSpec::new(DB, 272).size(CVD_SIZE), &rogue_keys()).unwrap();
            w.up.put("bytecode.cvd", &bytes);
        },
        &["bytecode.cvd", "rejected"],
        restore_cvd,
    );
}

#[test]
fn cvd_with_a_corrupt_dsig_is_rejected() {
    fault_case(
        None,
        |w| {
            let mut bytes = cvd(272, CVD_SIZE).to_vec();
            // The dsig is the 7th colon-separated header field.
            let header = String::from_utf8_lossy(&bytes[..512]).into_owned();
            let start: usize = header.split(':').take(6).map(|f| f.len() + 1).sum();
            bytes[start + 10] = if bytes[start + 10] == b'a' {
                b'b'
            } else {
                b'a'
            };
            w.up.put("bytecode.cvd", &bytes);
        },
        &["bytecode.cvd", "rejected"],
        restore_cvd,
    );
}

#[test]
fn cvd_of_an_older_version_than_advertised_is_rejected() {
    fault_case(
        None,
        |w| w.up.put("bytecode.cvd", &cvd(271, CVD_SIZE)),
        &["bytecode.cvd", "271", "272"],
        restore_cvd,
    );
}

/// Two attempts: one retry after the (2 s base) backoff.
const TWO_ATTEMPTS: &str = r#"
[sync]
attempts = 2
stall_timeout = "1s"
connect_timeout = "2s"
backfill = 3
max_requests_per_file_per_hour = 10
"#;

fn server_error(code: u16) {
    let case = fault_case(
        Some(TWO_ATTEMPTS),
        |w| w.up.fault("bytecode.cvd", Fault::Status(code)),
        &["bytecode.cvd", &code.to_string()],
        clear("bytecode.cvd"),
    );
    assert_eq!(
        case.failed.requests_for("bytecode.cvd").len(),
        2,
        "a {code} is retried up to `attempts` times\n{}",
        case.failed
    );
}

#[test]
fn http_500_is_retried_then_reported() {
    server_error(500);
}

#[test]
fn http_503_is_retried_then_reported() {
    server_error(503);
}

#[test]
fn a_transient_503_is_retried_within_the_pass() {
    let (world, mirror) = healthy();
    std::fs::write(mirror.dir.path().join("cvdmirror.toml"), TWO_ATTEMPTS).unwrap();
    world.release(271, 272, CVD_SIZE);
    world.up.fault_times("bytecode.cvd", Fault::Status(503), 1);
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(run.requests_for("bytecode.cvd").len(), 2, "{run}");
    assert_eq!(mirror.version(), Some(272));
}

#[test]
fn rate_limit_with_retry_after_seconds_cools_down_then_converges() {
    let case = fault_case(
        None,
        |w| {
            w.up.fault("bytecode.cvd", Fault::RateLimited(Some("1".into())))
        },
        &["bytecode.cvd", "429"],
        |w, _| {
            w.up.clear_fault("bytecode.cvd");
            // The cool-down is wall-clock time; it has to pass.
            wait_until_unix(unix_now() + 1);
        },
    );
    assert_eq!(case.failed.requests_for("bytecode.cvd").len(), 1);
}

#[test]
fn rate_limit_with_retry_after_date_cools_down_then_converges() {
    let until = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    let case = fault_case(
        None,
        |w| {
            w.up.fault(
                "bytecode.cvd",
                Fault::RateLimited(Some(httpdate::fmt_http_date(until))),
            )
        },
        &["bytecode.cvd", "429"],
        |w, _| {
            w.up.clear_fault("bytecode.cvd");
            wait_until_unix(unix_now() + 2);
        },
    );
    assert_eq!(case.failed.requests_for("bytecode.cvd").len(), 1);
}

#[test]
fn stalled_transfer_times_out_then_resumes() {
    let case = fault_case(
        None,
        |w| w.up.fault("bytecode.cvd", Fault::Stall(150_000)),
        &["bytecode.cvd"],
        clear("bytecode.cvd"),
    );
    let resumed = case.healed.requests_for("bytecode.cvd");
    assert_eq!(
        resumed[0].header("range"),
        Some("bytes=150000-"),
        "{}",
        case.healed
    );
    assert!(resumed[0].header("if-range").is_some(), "{}", case.healed);
}

#[test]
fn connection_reset_mid_body_then_resumes() {
    let case = fault_case(
        None,
        |w| w.up.fault("bytecode.cvd", Fault::Reset(70_000)),
        &["bytecode.cvd"],
        clear("bytecode.cvd"),
    );
    let resumed = case.healed.requests_for("bytecode.cvd");
    let range = resumed[0].header("range").unwrap_or_default();
    assert!(
        range.starts_with("bytes=") && range != "bytes=0-",
        "a reset download must be resumed\n{}",
        case.healed
    );
}

#[test]
fn missing_required_cdiff_blocks_the_cvd() {
    let case = fault_case(
        None,
        |w| w.up.remove(&cdiff_name(272)),
        &["bytecode-272.cdiff", "404"],
        restore_cdiff,
    );
    assert!(
        case.failed.requests_for("bytecode.cvd").is_empty(),
        "no point downloading a CVD that cannot be published\n{}",
        case.failed
    );
}

#[test]
fn cdiff_with_a_bad_signature_is_rejected_and_blocks_the_cvd() {
    let case = fault_case(
        None,
        |w| {
            w.up.put(
                &cdiff_name(272),
                &build::cdiff(DB, 272, &rogue_keys()).unwrap(),
            )
        },
        &["bytecode-272.cdiff", "rejected"],
        restore_cdiff,
    );
    assert!(!case.failed.stderr.is_empty());
}

#[test]
fn cdiff_with_a_flipped_byte_is_rejected() {
    fault_case(
        None,
        |w| {
            let mut bytes = cdiff(272).to_vec();
            bytes[30] ^= 1;
            w.up.put(&cdiff_name(272), &bytes);
        },
        &["bytecode-272.cdiff", "rejected"],
        restore_cdiff,
    );
}

#[test]
fn cdiff_of_the_wrong_version_is_rejected() {
    fault_case(
        None,
        |w| w.up.put(&cdiff_name(272), &cdiff(271)),
        &["bytecode-272.cdiff", "rejected"],
        restore_cdiff,
    );
}

#[test]
fn truncated_cdiff_is_rejected() {
    fault_case(
        None,
        |w| w.up.fault(&cdiff_name(272), Fault::Truncate(100)),
        &["bytecode-272.cdiff"],
        |w, _| w.up.clear_fault("bytecode-272.cdiff"),
    );
}

#[test]
fn dns_ahead_of_the_files_fails_until_they_arrive() {
    let (world, mirror) = healthy();
    let before = mirror.snapshot();
    world.release(271, 272, CVD_SIZE);
    world.advertise(DB, 273); // DNS moved on; the files have not.
    let run = mirror.sync(&world);
    run.assert_failed(&["bytecode-273.cdiff"]);
    assert_preserved(&before, &mirror, &run);
    assert_eq!(mirror.version(), Some(271), "{run}");
    world.release(272, 273, CVD_SIZE);
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(mirror.version(), Some(273), "{run}");
    check_served(&mirror.root, Some(271)).unwrap();
}

#[test]
fn upstream_ahead_of_dns_publishes_the_newer_cvd_with_its_cdiffs() {
    let (world, mirror) = healthy();
    world.release(271, 273, CVD_SIZE);
    world.advertise(DB, 272); // DNS lags the files.
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(mirror.version(), Some(273), "{run}");
    check_served(&mirror.root, Some(271)).unwrap_or_else(|e| panic!("{e}\n{run}"));
}

#[test]
fn dns_failure_fails_without_touching_upstream() {
    let (world, mirror) = healthy();
    let before = mirror.snapshot();
    world.release(271, 272, CVD_SIZE);
    world
        .dns
        .set_behaviour(cvdmirror::dns::test_server::Behaviour::ServFail);
    let run = mirror.sync(&world);
    run.assert_failed(&["versions"]);
    assert!(run.requests.is_empty(), "{run}");
    assert_preserved(&before, &mirror, &run);
    assert_eq!(mirror.snapshot(), before);
}

#[test]
fn forbidden_stops_the_pass_and_keeps_the_set() {
    let (world, mirror) = healthy();
    let before = mirror.snapshot();
    world.release(271, 272, CVD_SIZE);
    world.up.fault("bytecode.cvd", Fault::Status(403));
    let run = mirror.sync(&world);
    run.assert_failed(&["403"]);
    assert_preserved(&before, &mirror, &run);
}
