//! Binds the listening sockets.
//!
//! IPv6 sockets are bound `IPV6_V6ONLY`, so `[::]:8080` and `0.0.0.0:8080`
//! coexist as two sockets with honest per-family addresses instead of
//! IPv4-mapped ones. The built-in default tolerates a host without IPv6 (it
//! serves IPv4 and says so); an address the operator named must bind or
//! startup fails.
//!
//! Each worker thread accepts from a socket of its own: the first is bound
//! exclusively (an address in use is an error, even one held by another
//! cvdmirror), then opens an `SO_REUSEPORT` group that the other workers'
//! [`sibling`]s join, and the kernel spreads new connections over the group.
//! Workers sharing one socket would all be woken by every connection and all
//! but one find nothing to accept.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
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

/// Binds one address with the options a server wants: exclusively, then
/// open to [`sibling`]s.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = unbound(addr)?;
    socket.bind(&addr.into())?;
    // Set after the bind, so the bind itself still fails on an address in
    // use; before listen, so the listening socket founds the group.
    socket.set_reuse_port(true)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Another socket listening on `listener`'s address, for another worker:
/// a member of its `SO_REUSEPORT` group with the same options, or a
/// duplicate of it when it has no group (a socket not bound by [`bind`]).
pub fn sibling(listener: &TcpListener) -> io::Result<TcpListener> {
    let original = SockRef::from(listener);
    if !original.reuse_port()? {
        return listener.try_clone();
    }
    let addr = listener.local_addr()?;
    let socket = unbound(addr)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(original.tcp_nodelay()?)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A non-blocking TCP socket for `addr`'s family, not yet bound.
fn unbound(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Sets `TCP_NODELAY` on a listener, so that every socket it accepts
/// starts with it (Linux copies it to accepted sockets): responses are
/// written whole, and Nagle's algorithm must not hold back their tails.
pub fn no_delay(listener: &TcpListener) -> io::Result<()> {
    SockRef::from(listener).set_tcp_nodelay(true)
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
    fn siblings_share_the_address_and_every_one_accepts() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        no_delay(&first).unwrap();
        let second = sibling(&first).unwrap();
        let addr = first.local_addr().unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        assert!(SockRef::from(&second).tcp_nodelay().unwrap());
        // The kernel spreads connections by their addresses: connect until
        // each socket has had one, from distinct source ports.
        let mut clients = Vec::new();
        let (mut got_first, mut got_second) = (false, false);
        for _ in 0..200 {
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            got_first |= first.accept().is_ok();
            got_second |= second.accept().is_ok();
            if got_first && got_second {
                return;
            }
        }
        panic!("one socket of the group never accepted (first {got_first}, second {got_second})");
    }

    #[test]
    fn a_bound_address_refuses_a_second_server_even_with_reuse_port() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        // Another cvdmirror binding the same address.
        assert!(bind(addr).is_err());
    }

    #[test]
    fn a_named_address_in_use_is_an_error() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind_all(&[addr], true).unwrap_err();
        assert_eq!(err.addr, addr);
    }
}
