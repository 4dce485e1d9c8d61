//! Binds the listening sockets.
//!
//! IPv6 sockets are bound `IPV6_V6ONLY`, so `[::]:8080` and `0.0.0.0:8080`
//! coexist as two sockets with honest per-family addresses instead of
//! IPv4-mapped ones. The built-in default tolerates a host without IPv6 (it
//! serves IPv4 and says so); an address the operator named must bind or
//! startup fails.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

/// Pending connections the kernel may queue per listener.
const BACKLOG: i32 = 4096;

/// A listener could not be bound.
#[derive(Debug, Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: io::Error,
}

/// Binds every address; with `tolerate_missing_ipv6`, IPv6 addresses the host
/// cannot offer are skipped with a warning (as long as one address binds).
pub fn bind_all(
    addrs: &[SocketAddr],
    tolerate_missing_ipv6: bool,
) -> Result<Vec<TcpListener>, BindError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    let mut skipped = None;
    for &addr in addrs {
        match bind(addr) {
            Ok(listener) => listeners.push(listener),
            Err(source) if tolerate_missing_ipv6 && addr.is_ipv6() && ipv6_unavailable(&source) => {
                tracing::warn!(%addr, error = %source, "IPv6 is not available on this host; serving IPv4 only");
                skipped = Some(BindError { addr, source });
            }
            Err(source) => return Err(BindError { addr, source }),
        }
    }
    match (listeners.is_empty(), skipped) {
        (true, Some(err)) => Err(err),
        _ => Ok(listeners),
    }
}

/// Binds one address with the options a server wants.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Sets `TCP_NODELAY` on a listener, so that every socket it accepts
/// starts with it (Linux copies it to accepted sockets): responses are
/// written whole, and Nagle's algorithm must not hold back their tails.
pub fn no_delay(listener: &TcpListener) -> io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_nodelay(true)
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::AFNOSUPPORT.raw_os_error() || code == rustix::io::Errno::ADDRNOTAVAIL.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_wildcards_bind_the_same_port() {
        let v4 = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let both = bind_all(&[SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))], true);
        // Either IPv6 loopback works (distinct socket, same port) or it is skipped.
        assert!(both.is_ok());
    }

    #[test]
    fn accepted_sockets_inherit_no_delay_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        no_delay(&listener).unwrap();
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn a_named_address_in_use_is_an_error() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind_all(&[addr], true).unwrap_err();
        assert_eq!(err.addr, addr);
    }
}
