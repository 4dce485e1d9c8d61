//! The bottom layer of cvdmirror: file formats and primitives that know
//! nothing of HTTP, configuration or the server.
//!
//! - [`cvd`]: ClamAV's CVD container, cdiff patches, their RSA/MD5
//!   signatures, ClamAV 1.5's detached PKCS#7 `.sign` files, and builders
//!   for test databases.
//! - [`file_kind`]: what kind of mirror file a name denotes.
//! - [`rate`]: bit and byte rates as operators write them (`100Mbit`), and
//!   the one formatter for rates and sizes.
//! - [`calendar`]: civil dates from Unix days (no time-zone database).
//! - [`atomic_file`], [`state_file`]: crash-safe replacement of a file, and
//!   checksummed JSON state on top of it.
//! - [`backoff`]: jittered exponential backoff for retries.
//! - [`topk`]: bounded heavy-hitter tables with error bounds.
//! - [`html`]: escaping text for HTML pages.
//! - [`mutex`]: the one lock helper (poison is not spread).

pub mod atomic_file;
pub mod backoff;
pub mod calendar;
pub mod cvd;
pub mod file_kind;
pub mod html;
pub mod mutex;
pub mod rate;
pub mod state_file;
pub mod topk;

pub use file_kind::FileKind;
pub use rate::{Rate, RateError};
