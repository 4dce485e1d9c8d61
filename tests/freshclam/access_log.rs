//! Reads cvdmirror's access log (combined format plus a duration) so the
//! tests can check what the server says it sent against what the real client
//! says it received.
//!
//! `CLIENT - - [time] "GET /bytecode.cvd HTTP/1.1" STATUS BYTES "REFERER" "UA" SECONDS`

/// One access-log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request target, e.g. `/bytecode.cvd`.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Body bytes actually sent (`-` reads as 0).
    pub bytes: u64,
    /// The User-Agent as logged.
    pub user_agent: String,
    /// The whole line, for messages.
    pub line: String,
}

/// Parses one line; `None` if it is not in the expected format.
pub fn parse(line: &str) -> Option<Entry> {
    let rest = &line[line.find("] \"")? + 2..];
    let (request, rest) = quoted(rest)?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut fields = rest.trim_start().splitn(3, ' ');
    let status = fields.next()?.parse().ok()?;
    let bytes = match fields.next()? {
        "-" => 0,
        n => n.parse().ok()?,
    };
    let rest = fields.next()?.trim_start();
    let (_referer, rest) = quoted(rest)?;
    let (user_agent, _seconds) = quoted(rest.trim_start())?;
    Some(Entry {
        method,
        path,
        status,
        bytes,
        user_agent,
        line: line.to_owned(),
    })
}

/// Splits a leading `"..."` (with `\"` and `\\` escapes) from the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &body[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

#[test]
fn parses_a_combined_line() {
    let e = parse(
        r#"127.0.0.1 - - [27/Nov/2026:23:28:34 +0000] "GET /bytecode.cvd HTTP/1.1" 206 512 "-" "ClamAV/1.4.6 (OS: Linux, \"x\")" 0.001"#,
    )
    .unwrap();
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.status, e.bytes),
        ("GET", "/bytecode.cvd", 206, 512)
    );
    assert_eq!(e.user_agent, r#"ClamAV/1.4.6 (OS: Linux, "x")"#);
    assert_eq!(
        parse(r#"1.2.3.4 - - [t] "GET /x HTTP/1.1" 404 - "-" "-" 0"#)
            .unwrap()
            .bytes,
        0
    );
}
