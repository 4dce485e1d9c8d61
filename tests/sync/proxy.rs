//! Upstream through a real HTTP proxy (Debian's `tinyproxy`, started by the
//! test on loopback): `--proxy` with and without basic authentication,
//! wrong credentials as a clear error that publishes nothing, and the
//! environment's `HTTP_PROXY`/`NO_PROXY` when no flag is given. Every
//! request that went through the proxy carries its `Via` header, so the
//! fake upstream's log tells proxied requests from direct ones.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::wait::{DEADLINE, poll};
use crate::support::world::*;

const USER: &str = "cvdmirror";
const PASSWORD: &str = "s3cret";
const VIA_NAME: &str = "testproxy";

/// A tinyproxy on a free loopback port, killed on drop.
struct Tinyproxy {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts one; with `auth`, it requires [`USER`]/[`PASSWORD`].
    fn start(auth: bool) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        // A port the kernel just handed out; tinyproxy binds it right after.
        // Should another process win it, tinyproxy exits and we try again.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = dir.path().join("tinyproxy.conf");
            let mut text = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nAllow 127.0.0.1\n\
                 LogFile \"{}\"\nLogLevel Info\nViaProxyName \"{VIA_NAME}\"\n",
                dir.path().join("tinyproxy.log").display()
            );
            if auth {
                text.push_str(&format!("BasicAuth {USER} {PASSWORD}\n"));
            }
            std::fs::write(&conf, text).unwrap();
            let mut child = Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run tinyproxy: {e}; install it with scripts/install-test-deps")
                });
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Listening (`true`), or exited (`false`).
            let up = poll(DEADLINE, || {
                if TcpStream::connect(addr).is_ok() {
                    Ok(true)
                } else if child.try_wait().unwrap().is_some() {
                    Ok(false)
                } else {
                    Err(())
                }
            });
            if up == Ok(true) {
                return Tinyproxy { child, addr, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tinyproxy did not start; log:\n{}", log(dir.path()));
    }

    fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("tinyproxy.log")).unwrap_or_default()
}

/// Asserts every request upstream saw came through the proxy.
fn assert_all_proxied(run: &Run, proxy: &Tinyproxy) {
    assert!(!run.requests.is_empty(), "{run}");
    for r in &run.requests {
        assert!(
            r.header("via").is_some_and(|v| v.contains(VIA_NAME)),
            "a request went around the proxy: {r}\n{run}\nproxy log:\n{}",
            log(proxy.dir.path())
        );
    }
}

#[test]
fn sync_goes_through_a_proxy_with_credentials() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let proxy = Tinyproxy::start(true);
    let mirror = Mirror::new()
        .arg("--proxy")
        .arg(&proxy.url(Some((USER, PASSWORD))));
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(mirror.version(), Some(271), "{run}");
    check_served(&mirror.root, None).unwrap();
    assert_all_proxied(&run, &proxy);
    assert!(
        !run.stderr.contains(PASSWORD),
        "the password never reaches a log\n{run}"
    );
}

#[test]
fn wrong_or_missing_proxy_credentials_are_a_clear_error_and_publish_nothing() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let proxy = Tinyproxy::start(true);
    for credentials in [Some((USER, "wrong")), None] {
        let mirror = Mirror::new().arg("--proxy").arg(&proxy.url(credentials));
        let run = mirror.sync(&world);
        // tinyproxy answers plain-HTTP requests with 401, CONNECT with 407.
        run.assert_failed(&["credentials missing or refused", "proxy"]);
        assert!(run.requests.is_empty(), "nothing reached upstream\n{run}");
        assert!(mirror.snapshot().is_empty(), "nothing published\n{run}");
        assert!(!run.stderr.contains("wrong"), "{run}");
    }
}

#[test]
fn the_environments_proxy_applies_without_a_flag_and_no_proxy_bypasses_it() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let proxy = Tinyproxy::start(false);

    let mirror = Mirror::new().env("HTTP_PROXY", &proxy.url(None));
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_all_proxied(&run, &proxy);

    let direct = Mirror::new()
        .env("HTTP_PROXY", &proxy.url(None))
        .env("NO_PROXY", "127.0.0.1");
    let run = direct.sync(&world);
    run.assert_ok();
    assert!(
        run.requests.iter().all(|r| r.header("via").is_none()),
        "NO_PROXY sends requests direct\n{run}"
    );

    // --proxy wins over the environment, and still honours NO_PROXY.
    let flagged = Mirror::new()
        .arg("--proxy")
        .arg(&proxy.url(None))
        .env("HTTP_PROXY", "http://127.0.0.1:9");
    let run = flagged.sync(&world);
    run.assert_ok();
    assert_all_proxied(&run, &proxy);
}
