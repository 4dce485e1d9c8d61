//! The mirror's access log as the tests read it: every line goes through
//! the library's own parser, [`cvdmirror::analyze::parse::parse_line`] (the
//! one `cvdmirror analyze` reads logs with), so a line the tests accept is
//! one the analyzer accepts too. The fields come back owned, with the
//! whole line for messages and for what the parser does not keep (the
//! ident and user fields, the referer, the request time as written).
//!
//! `CLIENT - - [dd/Mon/yyyy:HH:MM:SS +0000] "METHOD TARGET PROTOCOL" STATUS BYTES "REFERER" "USER-AGENT" SECONDS`

use cvdmirror::analyze::parse::{RequestTime, parse_line};

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The whole line, as written.
    pub line: String,
    /// The client address.
    pub client: String,
    /// When, in UTC seconds since the epoch.
    pub time: i64,
    /// The UTC offset the time was written in, seconds east.
    pub offset: i32,
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request target as logged, e.g. `/bytecode.cvd`.
    pub path: String,
    /// The quoted request field as logged: `METHOD TARGET PROTOCOL`.
    pub request: String,
    /// Response status.
    pub status: u16,
    /// Body bytes actually sent (`-` reads as 0).
    pub bytes: u64,
    /// The User-Agent as logged (still escaped); empty for `-`.
    pub user_agent: String,
    /// The request time the line ends with.
    pub request_time: Option<RequestTime>,
}

/// Where `part`, a slice the parser returned, starts in `line`.
fn offset_in(line: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - line.as_ptr() as usize
}

impl LogLine {
    /// Parses one line with the library's parser.
    pub fn parse(line: &str) -> Result<LogLine, String> {
        let bytes = line.as_bytes();
        let e = parse_line(bytes).map_err(|e| format!("{e}: {line:?}"))?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // The request field runs from the method the parser found to the
        // quote that closes it: right after the target and the protocol
        // (the target's own quotes are escaped).
        let start = offset_in(bytes, e.method);
        let end = if e.target.is_empty() {
            start + e.method.len()
        } else {
            let after = offset_in(bytes, e.target) + e.target.len();
            after
                + line[after..]
                    .find('"')
                    .ok_or_else(|| format!("no end of the request in {line:?}"))?
        };
        Ok(LogLine {
            line: line.to_owned(),
            client: text(e.host),
            time: e.time,
            offset: e.offset,
            method: text(e.method),
            path: text(e.target),
            request: line[start..end].to_owned(),
            status: e.status,
            bytes: e.bytes,
            user_agent: text(e.user_agent),
            request_time: e.request_time,
        })
    }

    /// The User-Agent as the client sent it (`\"` and `\\` unescaped).
    pub fn user_agent_unescaped(&self) -> String {
        let mut out = String::new();
        let mut chars = self.user_agent.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    }

    /// The last field as written: the request time in seconds.
    pub fn seconds(&self) -> &str {
        self.line.rsplit(' ').next().unwrap_or_default()
    }
}

/// Every line of `text`, parsed; a line the library cannot parse fails the test.
pub fn parse_all(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|l| LogLine::parse(l).unwrap_or_else(|e| panic!("unparsable access-log line: {e}")))
        .collect()
}
