//! Kernel pacing: `SO_MAX_PACING_RATE` caps one socket's send rate inside
//! the kernel (with the `fq` qdisc or TCP's internal pacing), spreading its
//! packets evenly instead of in bursts, at no CPU cost to us.
//!
//! The userland shaper stays in charge of fairness and caps across
//! connections; this only smooths each connection further. It is the one
//! place in cvdmirror that needs `unsafe`: neither socket2 nor rustix
//! exposes the option, so it is a single, checked `setsockopt` call.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Caps `socket`'s send rate at `bytes_per_sec` (Linux; clamped to 4 GB/s).
pub fn set_max_pacing_rate(socket: &impl AsFd, bytes_per_sec: u64) -> io::Result<()> {
    let value: u32 = u32::try_from(bytes_per_sec).unwrap_or(u32::MAX);
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `fd` is borrowed from a live socket for the duration of the
    // call; `value` is a valid u32 on our stack and `optlen` is its size,
    // which is what the kernel reads for SO_MAX_PACING_RATE.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&raw const value).cast::<libc::c_void>(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's pacing cap as the kernel holds it (for tests and diagnostics).
pub fn max_pacing_rate(socket: &impl AsFd) -> io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: as above; the kernel writes at most `len` bytes into `value`
    // and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&raw mut value).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if len as usize == std::mem::size_of::<u32>() {
        value & u64::from(u32::MAX)
    } else {
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_keeps_the_rate_we_set() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        set_max_pacing_rate(&socket, 1_250_000).unwrap();
        assert_eq!(max_pacing_rate(&socket).unwrap(), 1_250_000);
    }
}
