//! Why a database file was rejected. One enum for CVD, CLD and cdiff
//! verification, whose `Display` is a one-line reason fit for a log line and
//! for the sync engine's "kept the previous version because …" message.

use std::fmt;
use std::io;

use thiserror::Error;

use super::base64::Base64Error;
use super::header::HeaderError;

/// Which signature failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// The CVD header `dsig` (over the body MD5).
    Header,
    /// The `DSIG:` line of `<db>.info`.
    Info,
    /// The signature at the end of a cdiff.
    Cdiff,
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "header",
            Self::Info => ".info",
            Self::Cdiff => "cdiff",
        })
    }
}

/// A verification failure.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// Reading the input failed: not a verdict on the file.
    #[error("i/o error while verifying: {0}")]
    Io(#[from] io::Error),
    /// The file ends before its structure does.
    #[error("truncated: {0}")]
    Truncated(String),
    /// The 512-byte header does not parse.
    #[error("bad header: {0}")]
    Header(#[from] HeaderError),
    /// The header parses but is not in the exact form ClamAV writes.
    #[error("bad header: {0}")]
    HeaderForm(String),
    /// The file is a different database than expected.
    #[error("wrong database: expected {expected}, got {got}")]
    WrongName {
        /// Database name asked for.
        expected: String,
        /// What the file holds.
        got: String,
    },
    /// The file is a different version than expected.
    #[error("wrong version: expected {expected}, got {got}")]
    WrongVersion {
        /// Version asked for.
        expected: u32,
        /// Version in the file.
        got: u32,
    },
    /// A `.cvd` whose header has `X` for md5 or dsig.
    #[error("CVD header has no md5 or signature (X): a CLD is not a CVD")]
    Unsigned,
    /// The body's MD5 differs from the header's.
    #[error("md5 of body does not match header")]
    Md5Mismatch,
    /// A signature string is not ClamAV base64.
    #[error("{0} signature is malformed: {1}")]
    SignatureEncoding(Signed, Base64Error),
    /// No trusted key verifies a signature.
    #[error("{0} signature does not verify with any trusted key")]
    BadSignature(Signed),
    /// The body is not a valid gzip stream.
    #[error("bad gzip data: {0}")]
    Gzip(String),
    /// The (decompressed) body is not a tar archive ClamAV would read.
    #[error("bad tar archive: {0}")]
    Tar(String),
    /// `<db>.info` is missing or malformed.
    #[error("bad .info: {0}")]
    Info(String),
    /// The archive's members or header disagree with `<db>.info`.
    #[error("archive does not match .info: {0}")]
    Mismatch(String),
    /// A cdiff is malformed.
    #[error("bad cdiff: {0}")]
    Cdiff(String),
}

impl VerifyError {
    /// True if the failure came from reading the input, not from its
    /// content: the file may be fine and the operation worth retrying.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io(_))
    }

    pub(crate) fn signature(what: Signed, err: super::signature::SignatureError) -> Self {
        match err {
            super::signature::SignatureError::Encoding(e) => Self::SignatureEncoding(what, e),
            super::signature::SignatureError::NoTrustedKey => Self::BadSignature(what),
        }
    }
}
