//! The ClamAV database formats: CVD/CLD headers and bodies, cdiffs, their
//! two RSA signature schemes, and a generator of test-signed fixtures.
//!
//! The server needs only the 512-byte header: its `stime` is the
//! `Last-Modified` of the file, so every client that holds a version gets
//! `304` and a newer version always looks newer. The sync engine verifies
//! every downloaded file with [`verify_file`] / [`verify_cdiff`] before
//! publishing it, so a bad upstream file never replaces a good one.
//!
//! ```
//! use cvdmirror_formats::cvd::{self, Expected, TrustedKeys, build, testkeys};
//!
//! let keys = testkeys::signing_keys();
//! let file = build::cvd(&build::DbSpec::new("daily", 7), &keys).unwrap();
//! let trusted = TrustedKeys::official().merged(&keys.trusted());
//! let ok = cvd::verify_bytes(&file, &Expected::cvd("daily").version(7), &trusted).unwrap();
//! assert_eq!(ok.header.version, 7);
//! assert!(cvd::verify_bytes(&file, &Expected::cvd("daily"), &TrustedKeys::official()).is_err());
//! ```

pub mod base64;
pub mod build;
mod cdiff;
mod error;
mod header;
pub mod info;
mod keys;
pub mod sign;
pub mod signature;
mod tar;
pub mod testkeys;
mod verify;

pub use cdiff::{
    Cdiff, CdiffParts, MAX_CDIFF_BYTES, MAX_SCRIPT_BYTES, SignedCdiff, parse as parse_cdiff,
    script as cdiff_script, verify_cdiff, verify_cdiff_file,
};
pub use error::{Signed, VerifyError};
pub use header::{HEADER_LEN, Header, HeaderError};
pub use keys::{ExtraKey, KeyError, KeyRole, PublicKey, TrustedKeys};
pub use verify::{
    DbKind, Expected, HeaderSignature, Legacy, MAX_MEMBERS, MAX_TAR_BYTES, Member, Verified,
    verify_bytes, verify_file, verify_reader,
};
