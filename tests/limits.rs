//! Admission control through its public API, on a paused clock: the
//! sequence of limits, what each refusal looks like on the wire, quota
//! charging while a transfer runs, and usage surviving a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cvdmirror::limits::{
    Decision, Limits, LimitsConfig, Planned, SeededRandom, TokioClock, TransferVerdict,
};
use http::{HeaderMap, StatusCode, header};

// 2024-01-01T00:00:00Z.
const T0: Duration = Duration::from_secs(1_704_067_200);
const MB: u64 = 1 << 20;

fn limits(toml_text: &str) -> Limits {
    #[derive(serde::Deserialize)]
    struct File {
        limits: LimitsConfig,
    }
    let config = toml::from_str::<File>(toml_text).unwrap().limits;
    Limits::with_env(
        config,
        Arc::new(TokioClock::starting_at(T0)),
        Arc::new(SeededRandom::new(42)),
    )
    .unwrap()
}

fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 50_000)
}

struct Req {
    site: Arc<str>,
    ip: String,
    path: &'static str,
    status: StatusCode,
    len: u64,
}

fn cvd(ip: &str) -> Req {
    Req {
        site: Arc::from("mirror"),
        ip: ip.to_owned(),
        path: "/daily.cvd",
        status: StatusCode::OK,
        len: 60 * MB,
    }
}

fn cdiff(ip: &str) -> Req {
    Req {
        path: "/daily-27000.cdiff",
        len: 30_000,
        ..cvd(ip)
    }
}

fn admit(l: &Limits, r: &Req, available: u64) -> Decision {
    let client = l.client_key(peer(&r.ip), &HeaderMap::new());
    l.admit(
        &Planned {
            site: &r.site,
            client,
            path_and_query: r.path,
            status: r.status,
            is_head: false,
            body_len: r.len,
        },
        || available,
    )
}

fn refusal(d: Decision) -> cvdmirror::limits::Refusal {
    match d {
        Decision::Refuse(r) => r,
        Decision::Serve(_) => panic!("served"),
    }
}

fn served(d: Decision) -> cvdmirror::limits::Admitted {
    match d {
        Decision::Serve(a) => a,
        Decision::Refuse(r) => panic!("refused: {r:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn herd_gate_admits_bulk_only_while_each_keeps_the_minimum_rate() {
    // 100 Mbit/s class, 2 Mbit/s minimum: 50 at once.
    let l = limits(
        "[limits.herd]\nbulk_min_rate = \"2Mbit\"\nretry_after_min = \"1m\"\nretry_after_max = \"15m\"",
    );
    let link = 12_500_000;
    let mut held = Vec::new();
    for i in 0..50 {
        let a = served(admit(&l, &cvd("192.0.2.1"), link));
        assert!(a.bulk && a.guard.is_bulk(), "transfer {i}");
        held.push(a.guard);
    }
    // Refusals queue: the class finishes a 60 MB download about every
    // 60 MB / 12.5 MB/s = 5 s, so each refused client is told to come back
    // about 5 s after the one before (within the 1-15 min window).
    let mut retry = Vec::new();
    for n in 0..1000 {
        let ip = format!("10.0.{}.{}", n / 250, n % 250 + 1);
        let r = refusal(admit(&l, &cvd(&ip), link));
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        let s = r.retry_after().unwrap();
        assert!((60..=900).contains(&s));
        retry.push(s);
        let response = r.into_response();
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }
    assert!(retry.windows(2).all(|w| w[0] <= w[1]), "{retry:?}");
    assert_eq!((retry[0], retry[999]), (60, 900));
    let spaced = &retry[20..150];
    let gap = (spaced[129] - spaced[0]) as f64 / 129.0;
    assert!((gap - 5.0).abs() < 0.2, "{gap} s between places");
    // Asking again does not lose the place.
    let again = refusal(admit(&l, &cvd("10.0.0.100"), link));
    assert_eq!(again.retry_after(), Some(retry[99]));
    // Small responses are never gated.
    let small = served(admit(&l, &cdiff("192.0.2.3"), link));
    assert!(!small.bulk && !small.guard.is_bulk());
    let header_check = Req {
        status: StatusCode::PARTIAL_CONTENT,
        len: 512,
        ..cvd("192.0.2.3")
    };
    assert!(!served(admit(&l, &header_check, link)).bulk);
    // A finished transfer reopens the gate for exactly one more.
    held.pop();
    let _again = served(admit(&l, &cvd("192.0.2.4"), link));
    refusal(admit(&l, &cvd("192.0.2.5"), link));
    let herd = l.status().herd.unwrap();
    assert_eq!(
        (herd.active, herd.admitted, herd.denied, herd.open),
        (50, 51, 1002, false)
    );
    assert_eq!(herd.waiting, 1001);
    assert_eq!(l.status().refused["herd"], 1002);
}

#[tokio::test(start_paused = true)]
async fn request_rate_refuses_with_retry_after_and_reports_ratelimit_fields() {
    let l = limits(
        "[limits.requests]\nrequests = 6\nper = \"1m\"\nburst = 3\non_exceed = { action = \"reject\", status = 503, jitter = \"30s\" }",
    );
    for remaining in [2, 1, 0] {
        let a = served(admit(&l, &cdiff("2001:db8::1"), 0));
        assert_eq!(a.headers["ratelimit-policy"], "\"requests\";q=3;w=30");
        let want = format!("\"requests\";r={remaining};t=");
        assert!(a.headers["ratelimit"].to_str().unwrap().starts_with(&want));
    }
    // Same /64: same client.
    let r = refusal(admit(&l, &cdiff("2001:db8::ffff"), 0));
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let s = r.retry_after().unwrap();
    assert!((10..=40).contains(&s), "{s}");
    tokio::time::advance(Duration::from_secs(10)).await;
    served(admit(&l, &cdiff("2001:db8::2"), 0));
    assert_eq!(l.status().requests.unwrap().denied, 1);
}

#[tokio::test(start_paused = true)]
async fn connection_slots_are_held_by_the_guard() {
    let l = limits("[limits.client_connections]\nmax = 2");
    let a = served(admit(&l, &cdiff("192.0.2.1"), 0));
    let _b = served(admit(&l, &cdiff("192.0.2.1"), 0));
    let r = refusal(admit(&l, &cdiff("192.0.2.1"), 0));
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    drop(a.guard);
    served(admit(&l, &cdiff("192.0.2.1"), 0));
}

#[tokio::test(start_paused = true)]
async fn quotas_charge_during_transfers_release_by_slice_and_roll_over() {
    let l = limits(
        "[limits.client_quota]\nlimit = 2400000000\nperiod = \"1d\"\nslices = 24\non_exceed = { action = \"redirect\", status = 307, url = \"https://m2.example/clamav\" }\n\
         [limits.site_quota]\nlimit = 100000000000\nperiod = \"1d\"\nslices = 1\non_exceed = { action = \"slow\", rate = \"400kbit\" }",
    );
    let site: Arc<str> = Arc::from("mirror");
    let client = l.client_key(peer("192.0.2.1"), &HeaderMap::new());
    let a = served(admit(&l, &cvd("192.0.2.1"), 0));
    assert!(
        a.headers["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("\"client-bytes\";q=2400000000;w=86400;qu=\"content-bytes\"")
    );
    // The first slice allows 100 MB; charged as it is sent.
    for _ in 0..60 {
        l.charge(&site, client, MB);
    }
    assert_eq!(l.check_transfer(&site, client), TransferVerdict::Continue);
    for _ in 0..40 {
        l.charge(&site, client, MB);
    }
    assert_eq!(
        l.check_transfer(&site, client),
        TransferVerdict::Exceeded(cvdmirror::limits::LimitKind::ClientQuota)
    );
    let r = refusal(admit(&l, &cvd("192.0.2.1"), 0));
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        r.headers[header::LOCATION],
        "https://m2.example/clamav/daily.cvd"
    );
    // Small responses still pass; another client too.
    served(admit(&l, &cdiff("192.0.2.1"), 0));
    served(admit(&l, &cvd("192.0.2.9"), 0));
    // The next slice brings room.
    tokio::time::advance(Duration::from_secs(3600)).await;
    served(admit(&l, &cvd("192.0.2.1"), 0));
    // The site quota is used up: slow, not refuse. A transfer of the
    // client whose own (redirecting) quota is used up as well is slowed
    // too: the redirect can only answer its next request.
    l.charge(&site, client, 100_000_000_000);
    let site_slow = TransferVerdict::Slow {
        rate: 50_000,
        limit: cvdmirror::limits::LimitKind::SiteQuota,
    };
    assert_eq!(l.check_transfer(&site, client), site_slow);
    assert_eq!(
        refusal(admit(&l, &cvd("192.0.2.1"), 0)).status,
        StatusCode::TEMPORARY_REDIRECT
    );
    let other = l.client_key(peer("192.0.2.9"), &HeaderMap::new());
    assert_eq!(l.check_transfer(&site, other), site_slow);
    assert_eq!(
        served(admit(&l, &cvd("192.0.2.9"), 0)).slow_to,
        Some(50_000)
    );
    // Next day everything is fresh.
    tokio::time::advance(Duration::from_secs(86_400)).await;
    assert_eq!(l.check_transfer(&site, client), TransferVerdict::Continue);
    assert_eq!(served(admit(&l, &cvd("192.0.2.1"), 0)).slow_to, None);
    l.maintain();
    assert_eq!(l.status().tracked_quota_clients, 0);
}

#[tokio::test(start_paused = true)]
async fn usage_survives_a_restart_but_not_a_new_period() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("limits-state");
    let text = format!(
        "[limits]\nstate_file = {:?}\nsave_interval = \"10s\"\n[limits.client_quota]\nlimit = 1000\nperiod = \"1d\"",
        state.display().to_string()
    );
    let site: Arc<str> = Arc::from("mirror");
    let l = Arc::new(limits(&text));
    let client = l.client_key(peer("192.0.2.1"), &HeaderMap::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let l = l.clone();
        tokio::spawn(async move {
            l.run(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    l.charge(&site, client, 700);
    // The periodic save writes it.
    tokio::time::sleep(Duration::from_secs(11)).await;
    // The write runs on a blocking thread: give it real time without
    // advancing the paused clock.
    for _ in 0..1_000 {
        if state.exists() {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(state.exists());
    l.charge(&site, client, 100);
    stop.send(()).unwrap();
    runner.await.unwrap();

    // Restart, same day: 800 used.
    let again = limits(&text);
    again.load().unwrap();
    assert_eq!(
        again.quotas().check(&site, client, T0).client.unwrap().used,
        800
    );

    // Restart the next day: fresh.
    let tomorrow = Limits::with_env(
        again.config().clone(),
        Arc::new(TokioClock::starting_at(T0 + Duration::from_secs(86_400))),
        Arc::new(SeededRandom::new(1)),
    )
    .unwrap();
    tomorrow.load().unwrap();
    assert_eq!(tomorrow.status().tracked_quota_clients, 0);

    // A damaged file is set aside; the limits start empty.
    let mut bytes = std::fs::read(&state).unwrap();
    let n = bytes.len() - 5;
    bytes[n] ^= 0x20;
    std::fs::write(&state, bytes).unwrap();
    let fresh = limits(&text);
    fresh.load().unwrap();
    assert_eq!(fresh.status().tracked_quota_clients, 0);
    assert!(state.with_extension("corrupt").exists());
}

#[test]
fn client_keys_follow_trusted_proxies_and_prefixes() {
    let l = Limits::new(
        toml::from_str::<LimitsConfig>(
            "[clients]\nipv4 = 24\n[proxies]\ntrusted = [\"10.0.0.0/8\"]\nheader = \"forwarded\"",
        )
        .unwrap(),
    )
    .unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        header::FORWARDED,
        "for=\"[2001:db8:1:2::99]:1234\", for=10.1.1.1"
            .parse()
            .unwrap(),
    );
    assert_eq!(
        l.client_key(peer("10.0.0.1"), &h).to_string(),
        "2001:db8:1:2::/64"
    );
    assert_eq!(
        l.client_key(peer("198.51.100.77"), &h).to_string(),
        "198.51.100.0/24"
    );
}
