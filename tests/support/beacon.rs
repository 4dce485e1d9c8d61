//! The DNS beacon of a running `cvdmirror serve`, as a client asks it:
//! where it answers (from the server's startup lines) and which version of
//! `bytecode` it announces now, asked with the library's resolver.

use std::net::SocketAddr;
use std::time::Duration;

use super::server::TestServer;
use super::world::DB;

/// The address `server`'s beacon reported at startup (`beacon on ADDR`).
pub fn address(server: &TestServer) -> SocketAddr {
    server
        .startup
        .iter()
        .find_map(|line| line.strip_prefix("beacon on "))
        .expect("serve announces the beacon address")
        .parse()
        .unwrap()
}

/// The version of `bytecode` the beacon at `beacon` announces for `name`
/// now; `None` while it has nothing to say (or does not answer within a
/// second).
pub fn announced(beacon: SocketAddr, name: &str) -> Option<u32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cvdmirror::dns::lookup(
        name,
        Some(beacon),
        Duration::from_secs(1),
    ))
    .ok()
    .and_then(|record| record.version_of(DB))
}
