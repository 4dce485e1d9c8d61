//! Shaped bodies end to end, with the real pacer task on tokio's paused
//! clock: bytes arrive whole and in order, at the configured rate, small
//! responses overtake a herd, and nothing stays registered afterwards.
//! Durations asserted are virtual time, so the results do not depend on how
//! busy the machine is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use cvdmirror::body::ResponseBody;
use cvdmirror::shape::{FlowSpec, Rate, ShapeConfig, Shaper};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Duration, Instant};

/// A body yielding the given chunks, like a file read in pieces.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Splits `data` into chunks of varying sizes up to 256 KiB.
fn chunks(data: &[u8]) -> Chunks {
    let mut out = VecDeque::new();
    let mut rest = Bytes::copy_from_slice(data);
    let sizes = [1, 16 * 1024, 256 * 1024, 100_000, 3];
    let mut i = 0;
    while !rest.is_empty() {
        out.push_back(rest.split_to(sizes[i % sizes.len()].min(rest.len())));
        i += 1;
    }
    Chunks(out)
}

fn shaper(link: &str) -> Shaper {
    Shaper::new(ShapeConfig {
        link_rate: Some(link.parse().unwrap()),
        ..ShapeConfig::default()
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn bytes_arrive_whole_in_order_and_at_the_rate() {
    let shaper = shaper("8Mbit"); // 1 MB/s
    let _pacer = shaper.spawn_pacer(std::future::pending());
    let want = data(3_000_000);
    let body = shaper.wrap(chunks(&want), &FlowSpec::new("s", "bulk", "c"));
    let start = Instant::now();
    let got = body.collect().await.unwrap().to_bytes();
    let took = start.elapsed();
    assert_eq!(&got[..], &want[..]);
    // 3 MB at 1 MB/s, less the 16 KiB initial burst.
    assert!(
        took > Duration::from_millis(2950) && took < Duration::from_millis(3050),
        "{took:?}"
    );
    assert!(shaper.snapshot().sites[0].classes[0].clients.is_empty());
}

#[tokio::test(start_paused = true)]
async fn through_hyper_over_a_duplex_pipe() {
    let shaper = shaper("80Mbit");
    let _pacer = shaper.spawn_pacer(std::future::pending());
    let want = data(2_000_000);
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (body_data, s) = (want.clone(), shaper.clone());
    let service = hyper::service::service_fn(move |_req| {
        let body =
            ResponseBody::boxed(s.wrap(chunks(&body_data), &FlowSpec::new("s", "bulk", "c")));
        async move { Ok::<_, Infallible>(http::Response::new(body)) }
    });
    let conn = tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), service),
    );
    let (mut rd, mut wr) = tokio::io::split(client);
    wr.write_all(b"GET /daily.cvd HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut response = Vec::new();
    rd.read_to_end(&mut response).await.unwrap();
    let took = start.elapsed();
    conn.await.unwrap().unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&response[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // 2 MB at 10 MB/s, less the 4 ms initial burst.
    assert!(
        took >= Duration::from_millis(185) && took < Duration::from_millis(210),
        "{took:?}"
    );
    // Chunked or sized, the payload must be all there, in order.
    let payload = &response[split..];
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_vec()
    };
    assert_eq!(body, want);
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let len = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap();
        raw = &raw[line_end + 2..];
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..len]);
        raw = &raw[len + 2..];
    }
}

#[tokio::test(start_paused = true)]
async fn a_small_response_overtakes_a_herd() {
    let shaper = shaper("100Mbit");
    let _pacer = shaper.spawn_pacer(std::future::pending());
    let mut herd = Vec::new();
    for c in 0..30 {
        // 60 MB as the same 256 KiB chunk over and over: cheap to build.
        let cvd = Chunks(std::iter::repeat_n(Bytes::from(data(256 * 1024)), 240).collect());
        let body = shaper.wrap(cvd, &FlowSpec::new("s", "bulk", format!("h{c}").as_str()));
        herd.push(tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                frame.unwrap();
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(shaper.class_flows("bulk"), 30);
    assert!(shaper.waiting_flows() > 0);
    let class = shaper.classify("/daily.cvd", cvdmirror::pipeline::FileKind::Cvd, 64 * 1024);
    assert_eq!(&*class, "small");
    let small = shaper.wrap(
        chunks(&data(64 * 1024)),
        &FlowSpec::new("s", class, "checker"),
    );
    let start = Instant::now();
    small.collect().await.unwrap();
    let took = start.elapsed();
    assert!(
        took <= Duration::from_millis(10),
        "small response took {took:?}"
    );
    let load = shaper.class_load("s", "bulk");
    assert_eq!(load.active_flows, 30);
    // Meanwhile the herd keeps the link full, and no fuller.
    let before = shaper.snapshot().link.bytes;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = (shaper.snapshot().link.bytes - before) as f64;
    assert!((sent - 25_000_000.0).abs() < 25_000_000.0 * 0.02, "{sent}");
    assert!(shaper.snapshot().link.rate > 12_500_000.0 * 0.9);
    for h in herd {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn the_link_guard_takes_effect_live() {
    let shaper = shaper("80Mbit");
    let _pacer = shaper.spawn_pacer(std::future::pending());
    let body = shaper.wrap(chunks(&data(20_000_000)), &FlowSpec::new("s", "bulk", "c"));
    let task = tokio::spawn(body.collect());
    tokio::time::sleep(Duration::from_secs(1)).await;
    shaper.set_link_rate(Some(Rate::from_bytes_per_sec(1_000_000).unwrap()));
    assert_eq!(shaper.link_rate().map(Rate::bytes_per_sec), Some(1_000_000));
    let start = Instant::now();
    let got = task.await.unwrap().unwrap().to_bytes();
    // 10 MB went in the first second; the other 10 MB at 1 MB/s.
    let took = start.elapsed().as_secs_f64();
    assert!((took - 10.0).abs() < 0.2, "{took}");
    assert_eq!(got.len(), 20_000_000);
}

#[tokio::test(start_paused = true)]
async fn unshaped_bodies_need_no_pacer_and_are_counted() {
    let shaper = Shaper::new(ShapeConfig::default()).unwrap();
    let want = data(1_000_000);
    let body = shaper.wrap(chunks(&want), &FlowSpec::new("s", "bulk", "c"));
    assert!(body.flow().is_unshaped());
    let got = body.collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], &want[..]);
    let snapshot = shaper.snapshot();
    assert_eq!(snapshot.sites[0].node.bytes, 1_000_000);
    assert_eq!(snapshot.link.active_flows, 0);
}
