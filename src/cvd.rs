//! The ClamAV database formats: CVD/CLD headers, and (with sync) bodies,
//! cdiffs and their signatures.
//!
//! The server needs only the 512-byte header: its `stime` is the
//! `Last-Modified` of the file, so every client that holds a version gets
//! `304` and a newer version always looks newer.

mod header;

pub use header::{HEADER_LEN, Header, HeaderError};
