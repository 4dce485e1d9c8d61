//! Everything DNS: the ClamAV version record carried in TXT, looking it up
//! (how the sync learns upstream versions), and the consistency beacon that
//! answers the operator's own `DNSDatabaseInfo` name with the versions this
//! mirror actually publishes.
//!
//! freshclam decides what to fetch from one TXT record. Upstream's record
//! can run ahead of any mirror, and a client told about a version its
//! mirror lacks falls back to full downloads; the beacon closes that gap by
//! advertising only what is on disk. [`record`] is the text format,
//! [`lookup`](mod@lookup) the client side, [`beacon`] the server, and [`test_server`]
//! a settable TXT server for tests and demos.

pub mod beacon;
pub mod lookup;
pub mod record;
mod serve;
pub mod test_server;

pub use beacon::{Beacon, BeaconConfig, BeaconError};
pub use lookup::{LookupError, LookupOptions, Transport, lookup, lookup_with};
pub use record::{ParseError, STALE_AFTER, VersionRecord};

use hickory_server::proto::rr::Name;

/// Parses `name` as an absolute DNS name (a trailing dot is optional), so
/// no search domain is ever appended to it.
fn absolute_name(name: &str) -> Result<Name, String> {
    let mut parsed = Name::from_ascii(name).map_err(|e| e.to_string())?;
    if parsed.is_root() {
        return Err("the root is not a name that can hold a record".to_owned());
    }
    parsed.set_fqdn(true);
    Ok(parsed)
}
