//! Startup errors: a bad config must stop the process with a message a
//! person can act on (which file, which line, what is wrong) rather than a
//! server running with settings nobody intended.

use crate::support::TestServer;

/// Each bad value sits on line 3 so the line number is unambiguous.
const PREAMBLE: &str = "# cvdmirror test config\nheader_read_timeout = \"5s\"\n";

/// True if `text` cites line `n`: `line N`, `:N:` or `:N,` (not `N0`).
fn names_line(text: &str, n: u32) -> bool {
    let lower = text.to_ascii_lowercase();
    let not_digit_after = |s: &str, at: usize| !s[at..].starts_with(|c: char| c.is_ascii_digit());
    let needle = format!("line {n}");
    let by_word = lower
        .match_indices(&needle)
        .any(|(i, _)| not_digit_after(&lower, i + needle.len()));
    let colon = format!(":{n}");
    let by_colon = lower.match_indices(&colon).any(|(i, _)| {
        let after = &lower[i + colon.len()..];
        after.starts_with(':') || after.starts_with(',')
    });
    by_word || by_colon
}

fn refuses(toml: &str) -> String {
    TestServer::builder().config(toml).start_err()
}

fn assert_names_file_and_line(stderr: &str, line: u32) {
    assert!(
        stderr.contains("cvdmirror.toml"),
        "stderr does not name the config file:\n{stderr}"
    );
    assert!(
        names_line(stderr, line),
        "stderr does not name line {line}:\n{stderr}"
    );
}

#[test]
fn toml_syntax_error_names_file_line_and_reason() {
    let err = refuses(&format!("{PREAMBLE}shutdown_grace = = \"3s\"\n"));
    assert_names_file_and_line(&err, 3);
}

#[test]
fn unknown_key_is_refused_with_its_name() {
    let err = refuses(&format!("{PREAMBLE}bogus_knob = 1\n"));
    assert_names_file_and_line(&err, 3);
    assert!(
        err.contains("bogus_knob"),
        "reason does not name the key:\n{err}"
    );
}

#[test]
fn unknown_key_in_site_is_refused() {
    let err = refuses("[[site]]\nhosts = [\"a.example\"]\nrooot = \"/tmp\"\n");
    assert_names_file_and_line(&err, 3);
    assert!(
        err.contains("rooot"),
        "reason does not name the key:\n{err}"
    );
}

#[test]
fn wrong_type_is_refused() {
    let err = refuses(&format!("{PREAMBLE}shutdown_grace = 30\n"));
    assert_names_file_and_line(&err, 3);
    let lower = err.to_ascii_lowercase();
    assert!(
        lower.contains("type") || lower.contains("expected"),
        "no reason given:\n{err}"
    );
}

#[test]
fn wrong_type_in_site_is_refused() {
    let err = refuses("# sites\n[[site]]\nhosts = \"a.example\"\nroot = \"/tmp\"\n");
    assert_names_file_and_line(&err, 3);
}

#[test]
fn bad_listen_address_is_refused() {
    let err = refuses(&format!("{PREAMBLE}listen = [\"999.1.2.3:80\"]\n"));
    assert_names_file_and_line(&err, 3);
    assert!(
        err.contains("999.1.2.3:80"),
        "reason does not quote the address:\n{err}"
    );
}

#[test]
fn bad_duration_is_refused() {
    for bad in ["soon", "5 parsecs", "-1s", ""] {
        let err = refuses(&format!("{PREAMBLE}shutdown_grace = \"{bad}\"\n"));
        assert_names_file_and_line(&err, 3);
        let lower = err.to_ascii_lowercase();
        assert!(
            (!bad.is_empty() && err.contains(bad))
                || lower.contains("duration")
                || lower.contains("time"),
            "reason does not explain the duration {bad:?}:\n{err}"
        );
    }
}

#[test]
fn bad_header_read_timeout_is_refused() {
    let err = refuses("# timeouts\n\nheader_read_timeout = \"fast\"\n");
    assert_names_file_and_line(&err, 3);
}

#[test]
fn bad_rate_is_refused_with_what_to_write() {
    for (bad, reason) in [("100", "no unit"), ("100mbps", "ambiguous")] {
        let err = refuses(&format!("# alerts\n[alerts]\nlink_capacity = \"{bad}\"\n"));
        assert_names_file_and_line(&err, 3);
        assert!(
            err.contains(reason),
            "reason does not explain the rate {bad:?}:\n{err}"
        );
    }
}

#[test]
fn missing_config_file_is_refused_with_its_name() {
    let err = TestServer::builder()
        .args(["--config", "/nonexistent/dir/missing-cvdmirror.toml"])
        .start_err();
    assert!(
        err.contains("missing-cvdmirror.toml"),
        "stderr does not name the file:\n{err}"
    );
}

#[test]
fn bad_listen_flag_is_refused() {
    for bad in ["nonsense", "127.0.0.1", "127.0.0.1:99999", "[::1:80"] {
        let err = TestServer::builder()
            .no_default_listen()
            .args(["--listen", bad])
            .start_err();
        assert!(
            !err.trim().is_empty(),
            "--listen {bad}: refused without saying why"
        );
    }
}

#[test]
fn bad_max_conns_flag_is_refused() {
    for bad in ["abc", "-1"] {
        let err = TestServer::builder().args(["--max-conns", bad]).start_err();
        assert!(
            !err.trim().is_empty(),
            "--max-conns {bad}: refused without saying why"
        );
    }
}

#[test]
fn names_line_helper_is_exact() {
    assert!(names_line("TOML parse error at line 3, column 1", 3));
    assert!(names_line("cvdmirror.toml:3:5: bad", 3));
    assert!(!names_line("at line 30, column 1", 3));
    assert!(!names_line("port :3000", 3));
}
