//! `SIGHUP` (`systemctl reload`): a good new config applies to the next
//! requests without a restart; a bad one is rejected, said so, and the
//! running config keeps serving.

use crate::support::wait::{check, wait_until};
use crate::support::{DEADLINE, Response, TestServer};

fn site_config(root: &std::path::Path) -> String {
    format!(
        "[[site]]\nhosts = [\"a.example\"]\nroot = \"{}\"\n",
        root.display()
    )
}

fn body_for_host(server: &TestServer, host: &str) -> Vec<u8> {
    let request = format!("GET /which.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    Response::parse(&server.raw(request.as_bytes()), false).body
}

#[test]
fn sighup_applies_a_new_site_root_and_rejects_a_bad_config() {
    let roots = tempfile::tempdir().unwrap();
    let (first, second) = (roots.path().join("first"), roots.path().join("second"));
    for (dir, text) in [(&first, "first"), (&second, "second")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("which.txt"), text).unwrap();
    }
    let server = TestServer::builder().config(&site_config(&first)).start();
    let config_path = server.dir.path().join("cvdmirror.toml");
    assert_eq!(body_for_host(&server, "a.example"), b"first");

    std::fs::write(&config_path, site_config(&second)).unwrap();
    server.signal("HUP");
    wait_until(DEADLINE, || {
        check(
            body_for_host(&server, "a.example") == b"second",
            || "reload did not apply the new root",
        )
    });

    std::fs::write(
        &config_path,
        "[[site]]\nhosts = [\"a.example\"]\nroot = 5\n",
    )
    .unwrap();
    server.signal("HUP");
    let stderr = server.stderr_containing("rejected");
    assert!(
        stderr.contains("line 3"),
        "the rejection names the line: {stderr}"
    );
    assert_eq!(
        body_for_host(&server, "a.example"),
        b"second",
        "the running config keeps serving"
    );
}

#[test]
fn sighup_reopens_the_access_log_after_rotation() {
    let server = TestServer::serving(&[("dns.txt", b"x")]);
    assert_eq!(server.get("/dns.txt", &[]).status, 200);
    server.access_log_lines(1);
    let rotated = server.dir.path().join("access.log.1");
    std::fs::rename(&server.access_log, &rotated).unwrap();
    server.signal("HUP");
    // Requests keep coming; once the log is reopened they land in a new file.
    wait_until(DEADLINE, || {
        let reopened =
            std::fs::read_to_string(&server.access_log).is_ok_and(|text| !text.is_empty());
        if !reopened {
            assert_eq!(server.get("/dns.txt", &[]).status, 200);
        }
        check(reopened, || "the access log was not reopened after SIGHUP")
    });
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("GET /dns.txt")
    );
}
