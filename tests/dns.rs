//! DNS end to end on loopback: `dns::lookup` against the beacon and the
//! test TXT server over UDP and TCP, every answer code the beacon gives
//! (checked with raw queries, so the resolver's interpretation cannot hide
//! a wrong code), and the failures the sync must tell apart.
//!
//! Every server binds port 0 on 127.0.0.1; readiness needs no waiting
//! because sockets are bound before a test sends anything.

// Helpers outside `#[test]` functions panic on failure just like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cvdmirror::dns::beacon::Clock;
use cvdmirror::dns::record::epoch_seconds;
use cvdmirror::dns::test_server::{Behaviour, TxtServer};
use cvdmirror::dns::{
    Beacon, BeaconConfig, LookupError, LookupOptions, Transport, VersionRecord, lookup, lookup_with,
};
use hickory_server::proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NAME: &str = "current.cvd.example.test";
const UPSTREAM: &str = "1.4.3:62:27500:1600000000:0:90:1:339";
const TIMEOUT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn record(text: &str) -> VersionRecord {
    VersionRecord::parse(text).unwrap()
}

/// A running beacon; stops when dropped.
struct Running {
    udp: SocketAddr,
    tcp: SocketAddr,
    versions: watch::Sender<Option<VersionRecord>>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn beacon(published: Option<&str>, clock: Option<Clock>) -> Running {
    let (versions, rx) = watch::channel(published.map(record));
    let mut config = BeaconConfig::new(loopback(), NAME);
    if let Some(clock) = clock {
        config = config.with_clock(clock);
    }
    let beacon = Beacon::bind(config, rx).await.unwrap();
    let udp = beacon.udp_addr();
    let tcp = beacon.tcp_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(beacon.run(stop.clone().cancelled_owned()));
    Running {
        udp,
        tcp,
        versions,
        stop,
    }
}

/// Sends one raw UDP query and returns the decoded response.
async fn raw_query(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let socket = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    let mut query = Message::query();
    query.metadata.id = 4242;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let (len, _) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("no DNS answer in time")
        .unwrap();
    let response = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(response.metadata.id, 4242);
    assert_eq!(response.metadata.message_type, MessageType::Response);
    response
}

#[tokio::test]
async fn lookup_over_udp_reads_the_published_versions() {
    let running = beacon(Some(UPSTREAM), None).await;
    let got = lookup(NAME, Some(running.udp), TIMEOUT).await.unwrap();
    assert_eq!(got.daily, 27500);
    assert_eq!(got.version_of("bytecode"), Some(339));
    assert_eq!(got.release, "1.4.3");
    assert!(!got.is_stale(SystemTime::now()));
}

#[tokio::test]
async fn lookup_over_tcp_reads_the_published_versions() {
    let running = beacon(Some(UPSTREAM), None).await;
    assert_eq!(running.tcp.port(), running.udp.port(), "one port for both");
    let options = LookupOptions {
        nameserver: Some(running.tcp),
        timeout: TIMEOUT,
        transport: Transport::Tcp,
    };
    let got = lookup_with(NAME, &options).await.unwrap();
    assert_eq!(got.main, 62);
    assert_eq!(got.safebrowsing, Some(1));
}

#[tokio::test]
async fn record_time_is_the_moment_of_the_answer() {
    let now = Arc::new(std::sync::Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
    ));
    let clock: Clock = {
        let now = Arc::clone(&now);
        Arc::new(move || *now.lock().unwrap())
    };
    let running = beacon(Some(UPSTREAM), Some(clock)).await;
    let first = lookup(NAME, Some(running.udp), TIMEOUT).await.unwrap();
    assert_eq!(first.record_time, 1_900_000_000);
    *now.lock().unwrap() += Duration::from_secs(13 * 3600);
    let later = lookup(NAME, Some(running.udp), TIMEOUT).await.unwrap();
    assert_eq!(later.record_time, 1_900_000_000 + 13 * 3600);
    assert_eq!(later.daily, first.daily);
}

#[tokio::test]
async fn real_clock_record_time_is_now() {
    let running = beacon(Some(UPSTREAM), None).await;
    let before = epoch_seconds(SystemTime::now());
    let got = lookup(NAME, Some(running.udp), TIMEOUT).await.unwrap();
    let after = epoch_seconds(SystemTime::now());
    assert!((before..=after).contains(&got.record_time), "{got}");
}

#[tokio::test]
async fn published_updates_show_in_the_next_answer() {
    let running = beacon(None, None).await;
    let err = lookup(NAME, Some(running.udp), TIMEOUT).await.unwrap_err();
    assert!(
        matches!(err, LookupError::ServerError { .. }),
        "nothing published yet: {err}"
    );
    assert!(err.is_transient());

    running.versions.send_replace(Some(record(UPSTREAM)));
    let got = lookup(NAME, Some(running.udp), TIMEOUT).await.unwrap();
    assert_eq!(got.daily, 27500);

    running.versions.send_modify(|r| {
        if let Some(r) = r {
            r.daily = 27501;
        }
    });
    let got = lookup(NAME, Some(running.udp), TIMEOUT).await.unwrap();
    assert_eq!(got.daily, 27501);
}

#[tokio::test]
async fn answer_codes_follow_the_zone() {
    let running = beacon(Some(UPSTREAM), None).await;

    let txt = raw_query(running.udp, NAME, RecordType::TXT).await;
    assert_eq!(txt.metadata.response_code, ResponseCode::NoError);
    assert!(txt.metadata.authoritative);
    assert_eq!(txt.answers.len(), 1);
    assert_eq!(txt.answers[0].ttl, 60);
    let RData::TXT(data) = &txt.answers[0].data else {
        panic!("not TXT: {:?}", txt.answers[0]);
    };
    assert_eq!(data.txt_data.len(), 1, "freshclam reads one string only");

    // The case the client asked in is the case it gets back.
    let upper = raw_query(running.udp, "CURRENT.cvd.example.test", RecordType::TXT).await;
    assert_eq!(upper.answers.len(), 1);
    assert_eq!(
        upper.answers[0].name.to_ascii(),
        "CURRENT.cvd.example.test."
    );

    let other_type = raw_query(running.udp, NAME, RecordType::A).await;
    assert_eq!(other_type.metadata.response_code, ResponseCode::NoError);
    assert!(other_type.answers.is_empty());

    let sibling = raw_query(running.udp, "main.cvd.example.test", RecordType::TXT).await;
    assert_eq!(sibling.metadata.response_code, ResponseCode::NXDomain);
    assert!(sibling.metadata.authoritative);

    let apex = raw_query(running.udp, "cvd.example.test", RecordType::TXT).await;
    assert_eq!(apex.metadata.response_code, ResponseCode::NoError);
    assert!(apex.answers.is_empty());

    let outside = raw_query(running.udp, "example.test", RecordType::TXT).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    let elsewhere = raw_query(running.udp, "current.cvd.clamav.net", RecordType::TXT).await;
    assert_eq!(elsewhere.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn nothing_published_is_servfail_on_the_wire() {
    let running = beacon(None, None).await;
    let response = raw_query(running.udp, NAME, RecordType::TXT).await;
    assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
    assert!(response.answers.is_empty());
}

#[tokio::test]
async fn other_names_are_nxdomain_to_lookup() {
    let running = beacon(Some(UPSTREAM), None).await;
    let err = lookup("daily.cvd.example.test", Some(running.udp), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::NxDomain { .. }), "{err}");
    assert!(err.to_string().contains("daily.cvd.example.test"), "{err}");
    assert!(!err.is_transient());

    let err = lookup("cvd.example.test", Some(running.udp), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::NoTxt { .. }), "{err}");

    let err = lookup("example.test", Some(running.udp), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::ServerError { .. }), "{err}");
    assert!(err.to_string().contains("Refused"), "{err}");
}

#[tokio::test]
async fn first_record_that_parses_wins() {
    let server = TxtServer::start(NAME, UPSTREAM).await.unwrap();
    server.set_behaviour(Behaviour::TxtRecords(vec![
        "v=spf1 -all".to_owned(),
        UPSTREAM.to_owned(),
        "not:a:version:record".to_owned(),
    ]));
    let txt = raw_query(server.addr(), NAME, RecordType::TXT).await;
    assert_eq!(txt.answers.len(), 3);
    let got = lookup(NAME, Some(server.addr()), TIMEOUT).await.unwrap();
    assert_eq!(got.to_string(), UPSTREAM);
}

#[tokio::test]
async fn malformed_record_is_a_clear_error() {
    let server = TxtServer::start(NAME, "this is not a version record")
        .await
        .unwrap();
    let err = lookup(NAME, Some(server.addr()), TIMEOUT)
        .await
        .unwrap_err();
    let LookupError::Malformed { text, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(text, "this is not a version record");
    assert!(err.to_string().contains("not a version record"), "{err}");

    server.set_record("1.4.3:62:lots:1600000000");
    let err = lookup(NAME, Some(server.addr()), TIMEOUT)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("daily"), "{err}");
}

#[tokio::test]
async fn test_server_advertises_what_it_is_told() {
    let server = TxtServer::start(NAME, UPSTREAM).await.unwrap();
    assert_eq!(server.name(), "current.cvd.example.test.");
    let got = lookup(NAME, Some(server.addr()), TIMEOUT).await.unwrap();
    assert_eq!(
        got.to_string(),
        UPSTREAM,
        "the test server does not restamp"
    );

    // A version the mirror's files do not have yet: the incident's setup.
    server.set_record("1.4.3:62:27500:1600000000:0:90:1:400");
    let got = lookup(NAME, Some(server.addr()), TIMEOUT).await.unwrap();
    assert_eq!(got.bytecode, Some(400));

    let options = LookupOptions {
        nameserver: Some(server.addr()),
        timeout: TIMEOUT,
        transport: Transport::Tcp,
    };
    assert_eq!(
        lookup_with(NAME, &options).await.unwrap().bytecode,
        Some(400)
    );

    server.set_behaviour(Behaviour::NxDomain);
    let err = lookup(NAME, Some(server.addr()), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::NxDomain { .. }), "{err}");
}

#[tokio::test]
async fn strings_of_one_record_are_joined() {
    // A 300-character release needs two character-strings.
    let release = "r".repeat(300);
    let server = TxtServer::start(NAME, format!("{release}:62:27500:1600000000"))
        .await
        .unwrap();
    let txt = raw_query(server.addr(), NAME, RecordType::TXT).await;
    let RData::TXT(data) = &txt.answers[0].data else {
        panic!("not TXT");
    };
    assert_eq!(data.txt_data.len(), 2);
    let options = LookupOptions {
        nameserver: Some(server.addr()),
        timeout: TIMEOUT,
        transport: Transport::Tcp,
    };
    let got = lookup_with(NAME, &options).await.unwrap();
    assert_eq!(got.release, release);
    assert_eq!(got.daily, 27500);
}

#[tokio::test]
async fn silent_server_times_out_within_the_bound() {
    // A bound socket that never replies.
    let silent = std::net::UdpSocket::bind(loopback()).unwrap();
    let timeout = Duration::from_secs(1);
    let started = tokio::time::Instant::now();
    let err = lookup(NAME, Some(silent.local_addr().unwrap()), timeout)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, LookupError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn test_server_can_play_dead() {
    let server = TxtServer::start(NAME, UPSTREAM).await.unwrap();
    server.set_behaviour(Behaviour::NoAnswer);
    let err = lookup(NAME, Some(server.addr()), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::Timeout { .. }), "{err}");

    server.set_behaviour(Behaviour::Txt(UPSTREAM.to_owned()));
    assert!(lookup(NAME, Some(server.addr()), TIMEOUT).await.is_ok());
}

#[tokio::test]
async fn invalid_name_is_refused_before_asking() {
    let err = lookup("bad..name", None, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, LookupError::InvalidName { .. }), "{err}");
}

#[tokio::test]
async fn beacon_stops_on_shutdown() {
    let (_tx, rx) = watch::channel(Some(record(UPSTREAM)));
    let beacon = Beacon::bind(BeaconConfig::new(loopback(), NAME), rx)
        .await
        .unwrap();
    let addr = beacon.udp_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(beacon.run(stop.clone().cancelled_owned()));
    assert!(lookup(NAME, Some(addr), TIMEOUT).await.is_ok());
    stop.cancel();
    tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("beacon did not stop")
        .unwrap()
        .unwrap();
    // The port is free again.
    std::net::UdpSocket::bind(addr).unwrap();
}

#[tokio::test]
async fn udp_only_beacon_refuses_tcp() {
    // Proves the TCP tests above really go over TCP.
    let (_tx, rx) = watch::channel(Some(record(UPSTREAM)));
    let config = BeaconConfig {
        tcp: None,
        ..BeaconConfig::new(loopback(), NAME)
    };
    let beacon = Beacon::bind(config, rx).await.unwrap();
    assert_eq!(beacon.tcp_addr(), None);
    let addr = beacon.udp_addr();
    let stop = CancellationToken::new();
    tokio::spawn(beacon.run(stop.clone().cancelled_owned()));
    let _stop = stop.drop_guard();
    assert!(lookup(NAME, Some(addr), TIMEOUT).await.is_ok());
    let options = LookupOptions {
        nameserver: Some(addr),
        timeout: TIMEOUT,
        transport: Transport::Tcp,
    };
    let err = lookup_with(NAME, &options).await.unwrap_err();
    assert!(matches!(err, LookupError::Transport { .. }), "{err}");
}

#[tokio::test]
async fn beacon_answers_on_ipv6_loopback() {
    let (_tx, rx) = watch::channel(Some(record(UPSTREAM)));
    let listen = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0));
    let beacon = Beacon::bind(BeaconConfig::new(listen, NAME), rx)
        .await
        .unwrap();
    let addr = beacon.udp_addr();
    assert!(addr.is_ipv6());
    let stop = CancellationToken::new();
    tokio::spawn(beacon.run(stop.clone().cancelled_owned()));
    let _stop = stop.drop_guard();
    for transport in [Transport::Udp, Transport::Tcp] {
        let options = LookupOptions {
            nameserver: Some(addr),
            timeout: TIMEOUT,
            transport,
        };
        let got = lookup_with(NAME, &options).await.unwrap();
        assert_eq!(got.bytecode, Some(339), "{transport:?}");
    }
}
