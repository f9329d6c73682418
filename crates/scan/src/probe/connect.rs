//! The connect probe (`-sT`): an ordinary non-blocking `connect()` ([`start`]), and the errno
//! it ends with ([`outcome`]), which `classify` reads as nmap's `handleConnectResult()` does.
//! Needs no privileges. Sockets close with `SO_LINGER` 0, so an open port gets a RST instead
//! of a four-way close (as nmap does). The engine that runs many at once is
//! `engine::connect`.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::ScanError;
use crate::classify::Reply;

/// Starts a connection attempt from `src` (unspecified: the kernel's choice) to `dst`: the
/// socket while the attempt is in progress, or the errno it ended with at once (0: connected).
pub(crate) fn start(src: IpAddr, dst: SocketAddr) -> Result<Result<Socket, i32>, ScanError> {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|source| {
        ScanError::Socket {
            what: "opening a TCP socket for a connect probe (too many open files? raise ulimit -n)"
                .into(),
            source,
        }
    })?;
    let _ = sock.set_linger(Some(Duration::ZERO));
    // Queue ICMP errors on the socket's error queue. Without it, an ICMP error that arrives
    // while connect() still holds the socket lock (common on a fast path) is only a "soft"
    // error, acted on at the kernel's first SYN retransmission a second later.
    let (level, name) = if dst.is_ipv4() {
        (libc::SOL_IP, libc::IP_RECVERR)
    } else {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    };
    let _ = crate::net::setsockopt_int(&sock, level, name, 1);
    sock.set_nonblocking(true)
        .map_err(|source| ScanError::Socket {
            what: "making a connect probe non-blocking".into(),
            source,
        })?;
    if !src.is_unspecified() {
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|source| ScanError::Socket {
                what: format!("binding a connect probe to source address {src}"),
                source,
            })?;
    }
    match sock.connect(&SockAddr::from(dst)) {
        Ok(()) => Ok(Err(0)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(Ok(sock)),
        Err(e) => Ok(Err(e.raw_os_error().unwrap_or(libc::EIO))),
    }
}

/// The errno of the first ICMP error queued on the socket (IP_RECVERR), if any.
fn queued_errno(s: &Socket) -> Option<i32> {
    let mut data = [0u8; 256];
    let mut control = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` describes valid buffers.
    let n = unsafe {
        libc::recvmsg(
            s.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return None;
    }
    // SAFETY: walking the control buffer the kernel filled, with the libc CMSG helpers.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR)
            {
                let ee = libc::CMSG_DATA(c)
                    .cast::<libc::sock_extended_err>()
                    .read_unaligned();
                return i32::try_from(ee.ee_errno).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    None
}

/// How a finished attempt on `sock` ended, as the reply `classify` reads: its errno, and
/// whether an ICMP error caused it (an error queued by IP_RECVERR; a reset queues nothing).
pub(crate) fn outcome(sock: &Socket) -> Reply {
    let pending = sock.take_error();
    let queued = queued_errno(sock);
    let errno = match pending {
        Ok(None) => queued.unwrap_or(0),
        Ok(Some(e)) => e.raw_os_error().unwrap_or(libc::EIO),
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    };
    Reply::Connect {
        errno,
        icmp: queued.is_some(),
    }
}
