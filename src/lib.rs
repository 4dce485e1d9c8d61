//! cvdmirror: a ClamAV signature-database mirror.
//!
//! It serves the databases to `freshclam` clients over HTTP exactly as the
//! official CDN does, and is built so that an upstream mishap or a herd of
//! clients can never leave the mirror half-updated or eat the link it shares
//! with other services.

pub mod cvd;
