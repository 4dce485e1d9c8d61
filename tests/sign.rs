//! ClamAV 1.5 `.sign` files (`#clamsign-1.0`): our verifier against ClamAV's
//! own signed test databases and against the real `sigtool` 1.5.3.
//!
//! - ClamAV's 11 test `.sign` files verify with ClamAV's TEST root at a fixed
//!   date (the root expires on 2027-03-26), and fail, with the kind of
//!   failure ClamAV reports, with the production root, after the root's
//!   expiry, over one changed byte and with a damaged signature line.
//! - A corpus of generated `.sign` files (every way a certificate, a line or
//!   the file can be wrong, and the ways that are still right) is judged by
//!   our verifier and by `sigtool --verify`; both must reach the same verdict
//!   and tell "invalid" (clients refuse the file) from "could not verify"
//!   (clients fall back to the legacy signature) alike. A `.sign` made by
//!   the fixtures' openssl-CLI recipe (`make-test-pki.sh`) and one made by
//!   `sigtool --sign` verify too, and sigtool finds and accepts the `.sign`
//!   of a generated CVD without legacy header signature. A first line
//!   `#clamsign` (no `-`) still crashes ClamAV 1.5.3; we call it unusable.
//! - Property tests: parsing and verifying never panic; blank lines,
//!   comments and CRLF endings never change a verdict; any changed byte of
//!   the signed file does.
//!
//! Needs the fixtures in ../shared/fixtures/clamav-sign (or
//! `$CVDMIRROR_SIGN_FIXTURES`) and ClamAV 1.5.3 built by
//! `scripts/build-clamav15` (or `$CVDMIRROR_CLAMAV15`); without them the
//! tests fail, none is skipped.
//!
//! One module per source of truth: `clamav_files` (ClamAV's signed test
//! files), `corpus` (the generated corpus against sigtool), `tools` (the
//! openssl-CLI recipe and `sigtool --sign`/`--verify` on their own) and
//! `properties`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod sign {
    mod clamav_files;
    mod corpus;
    mod properties;
    mod tools;
}
