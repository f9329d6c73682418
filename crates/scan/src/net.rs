//! Sockets at the edge: the raw send sockets, the packet receive socket, and source-address
//! selection. Everything here is thin I/O; decisions live in the engine and the probes.
//!
//! * IPv4 probes go out through one `SOCK_RAW/IPPROTO_RAW` socket (we write the IP header, so
//!   the source address is ours to choose per packet).
//! * A send thread builds its probes into a [`SendBatch`] and hands the batch to the kernel
//!   with one sendmmsg(2) per family ([`RawSender::send_batch`]) instead of one sendto(2) per
//!   probe.
//! * IPv6 probes go out through a `SOCK_RAW` socket of the probe's protocol bound to the
//!   source address; the kernel writes the IPv6 header. It never reads: a BPF filter that
//!   accepts nothing keeps its receive queue empty.
//! * Replies are read from one `AF_PACKET`/`SOCK_DGRAM` socket (link header stripped, both
//!   families, our own outgoing packets ignored with `PACKET_IGNORE_OUTGOING`).

use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::ScanError;

fn sock_err(what: &str) -> impl FnOnce(std::io::Error) -> ScanError + '_ {
    move |source| ScanError::Socket {
        what: what.to_string(),
        source,
    }
}

fn raw_err<'a>(kind: &'static str, what: &'a str) -> impl FnOnce(std::io::Error) -> ScanError + 'a {
    move |source| {
        if matches!(
            source.raw_os_error(),
            Some(libc::EPERM) | Some(libc::EACCES)
        ) {
            ScanError::RawSocketDenied { kind, source }
        } else {
            ScanError::Socket {
                what: what.to_string(),
                source,
            }
        }
    }
}

/// Whether a routing lookup's error says that `target` cannot be reached from this host (as
/// opposed to a failure of the lookup itself, such as running out of descriptors).
fn is_no_route(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            // No route to the network or host.
            libc::ENETUNREACH
                | libc::EHOSTUNREACH
                // No source address towards it (IPv6 disabled on every interface, say).
                | libc::EADDRNOTAVAIL
                // The kernel has no such family at all (booted with ipv6.disable=1): no
                // address of it is reachable from here.
                | libc::EAFNOSUPPORT
        )
    )
}

/// Picks the source address the kernel would use towards `target` (a UDP "connect" sends no
/// packet; it only consults the routing table).
///
/// # Errors
/// [`ScanError::NoRoute`] when `target` cannot be reached from this host: no route to it, no
/// source address towards it, or no support for its family. [`ScanError::Socket`] for any
/// other failure of the lookup (out of descriptors, `EMFILE`, most of all), which says nothing
/// about the target.
pub fn source_for(target: IpAddr) -> Result<IpAddr, ScanError> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| ScanError::Config("bad bind".into()))?
    } else {
        "[::]:0"
            .parse()
            .map_err(|_| ScanError::Config("bad bind".into()))?
    };
    let fail = |source: std::io::Error| {
        if is_no_route(&source) {
            ScanError::NoRoute { target, source }
        } else {
            ScanError::Socket {
                what: format!("looking up the source address towards {target} (a UDP socket)"),
                source,
            }
        }
    };
    let s = UdpSocket::bind(bind).map_err(fail)?;
    s.connect(SocketAddr::new(target, 9)).map_err(fail)?;
    Ok(s.local_addr().map_err(fail)?.ip())
}

/// Attaches a classic BPF program that accepts no packet.
fn attach_drop_all(s: &Socket) -> std::io::Result<()> {
    attach_filter(
        s,
        vec![libc::sock_filter {
            code: 0x06, // BPF_RET | BPF_K
            jt: 0,
            jf: 0,
            k: 0,
        }],
    )
}

/// Attaches the classic BPF program `prog` to `s` (`SO_ATTACH_FILTER`).
fn attach_filter(s: &Socket, mut prog: Vec<libc::sock_filter>) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The classic BPF program of [`Receiver::open`]. The socket is `SOCK_DGRAM`, so offset 0 is
/// the IP header.
fn reply_filter(base_sport: u16) -> Vec<libc::sock_filter> {
    let lo = u32::from(base_sport);
    let hi = lo + 15;
    let i = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LDB: u16 = 0x30; // A = byte at k
    const LDH: u16 = 0x28; // A = half at k
    const LDH_IND: u16 = 0x48; // A = half at X + k
    const LDX_MSH: u16 = 0xb1; // X = 4 * (byte at k & 0xf)
    const AND: u16 = 0x54;
    const JEQ: u16 = 0x15;
    const JGE: u16 = 0x35;
    const JGT: u16 = 0x25;
    const RET: u16 = 0x06;
    vec![
        i(LDB, 0, 0, 0),        // 0: version nibble
        i(AND, 0, 0, 0xf0),     // 1
        i(JEQ, 0, 8, 0x40),     // 2: IPv4 → 3, else → 11
        i(LDB, 0, 0, 9),        // 3: protocol
        i(JEQ, 14, 0, 1),       // 4: ICMP → accept
        i(JEQ, 1, 0, 6),        // 5: TCP → 7
        i(JEQ, 0, 13, 17),      // 6: UDP → 7, else reject
        i(LDX_MSH, 0, 0, 0),    // 7: X = IPv4 header length
        i(LDH_IND, 0, 0, 2),    // 8: destination port
        i(JGE, 0, 10, lo),      // 9
        i(JGT, 9, 8, hi),       // 10: in range → accept, else reject
        i(JEQ, 0, 8, 0x60),     // 11: IPv6 → 12, else reject
        i(LDB, 0, 0, 6),        // 12: next header
        i(JEQ, 5, 0, 58),       // 13: ICMPv6 → accept
        i(JEQ, 1, 0, 6),        // 14: TCP → 16
        i(JEQ, 0, 4, 17),       // 15: UDP → 16, else reject
        i(LDH, 0, 0, 42),       // 16: destination port
        i(JGE, 0, 2, lo),       // 17
        i(JGT, 1, 0, hi),       // 18: in range → accept, else reject
        i(RET, 0, 0, 0x4_0000), // 19: accept
        i(RET, 0, 0, 0),        // 20: reject
    ]
}

/// `setsockopt` of an integer option; the one place the scanner does it.
pub(crate) fn setsockopt_int(s: &Socket, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: passing a pointer to a live i32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends finished probe packets.
pub(crate) struct RawSender {
    v4: Option<Socket>,
    v6: Option<Socket>,
}

impl RawSender {
    /// Opens the sockets needed for the given families. `v6_source` is required when IPv6
    /// targets are scanned; `proto` is 6 or 17.
    pub fn open(
        kind: &'static str,
        want_v4: bool,
        v6_source: Option<std::net::Ipv6Addr>,
        proto: u8,
    ) -> Result<Self, ScanError> {
        let v4 = if want_v4 {
            let s = Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(libc::IPPROTO_RAW)),
            )
            .map_err(raw_err(kind, "opening the raw IPv4 send socket"))?;
            let _ = s.set_send_buffer_size(4 << 20);
            Some(s)
        } else {
            None
        };
        let v6 = match v6_source {
            Some(src) => {
                let s = Socket::new(
                    Domain::IPV6,
                    Type::RAW,
                    Some(Protocol::from(i32::from(proto))),
                )
                .map_err(raw_err(kind, "opening the raw IPv6 send socket"))?;
                attach_drop_all(&s).map_err(sock_err("filtering the IPv6 send socket"))?;
                s.bind(&SockAddr::from(SocketAddrV6::new(src, 0, 0, 0)))
                    .map_err(sock_err(
                        "binding the IPv6 send socket to the source address",
                    ))?;
                let _ = s.set_send_buffer_size(4 << 20);
                Some(s)
            }
            None => None,
        };
        Ok(RawSender { v4, v6 })
    }

    /// Sends every packet of `batch` and empties it: one sendmmsg(2) per family for the whole
    /// batch, in the order the packets were added (IPv4 and IPv6 go out through different
    /// sockets, so the two families are not ordered against each other).
    ///
    /// A packet refused for its destination (no neighbour, no route, a local firewall) counts
    /// as handed over, as one lost on the way would: its port ends up silent. When the kernel's
    /// buffers are full (`Sent::Busy`), that packet and the rest of its family are not sent;
    /// the caller has already counted them as sent, so they are lost probes like any other.
    ///
    /// # Errors
    /// Only for failures that make scanning pointless (bad socket, no socket for the family).
    pub fn send_batch(&self, batch: &mut SendBatch) -> Result<Flushed, ScanError> {
        let mut out = Flushed {
            unsent: 0,
            retransmissions: 0,
            outcome: Sent::Yes,
        };
        for v6 in [false, true] {
            let mut slots = [0usize; SEND_BATCH];
            let mut nslots = 0;
            for i in (0..batch.n).filter(|&i| batch.dsts[i].is_ipv6() == v6) {
                slots[nslots] = i;
                nslots += 1;
            }
            let slots = &slots[..nslots];
            let Some(&first) = slots.first() else {
                continue;
            };
            let sock = if v6 { &self.v6 } else { &self.v4 };
            let Some(sock) = sock else {
                return Err(ScanError::Config(format!(
                    "no send socket for the family of {}",
                    batch.dsts[first]
                )));
            };
            let handed = send_family(sock, batch, slots)?;
            out.unsent += slots.len() - handed.count;
            if handed.busy {
                out.outcome = Sent::Busy;
            }
            out.retransmissions += slots[..handed.count]
                .iter()
                .filter(|&&i| batch.retransmission[i])
                .count() as u64;
        }
        batch.n = 0;
        Ok(out)
    }
}

/// How far [`send_family`] got.
struct FamilySent {
    /// Leading packets of the slot list handed to the kernel (or refused for their
    /// destination).
    count: usize,
    /// The kernel's buffers were full at packet `count`: it and the rest were not sent.
    busy: bool,
}

/// Sends the packets `slots` of `batch` (all of one family) through `sock` with sendmmsg(2),
/// calling it again after a partial send to learn the failed packet's error.
fn send_family(sock: &Socket, batch: &SendBatch, slots: &[usize]) -> Result<FamilySent, ScanError> {
    let n = slots.len().min(SEND_BATCH);
    // SAFETY: all-zero sockaddr_storage and mmsghdr values are valid empty ones.
    let mut addrs: [libc::sockaddr_storage; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; SEND_BATCH];
    for (k, &i) in slots[..n].iter().enumerate() {
        msgs[k].msg_hdr.msg_namelen = fill_sockaddr(&mut addrs[k], batch.dsts[i]);
        iovs[k] = libc::iovec {
            // The kernel only reads from it (sendmsg's iovec is declared mutable).
            iov_base: batch.bufs[i].as_ptr() as *mut libc::c_void,
            iov_len: batch.lens[i],
        };
    }
    for ((m, addr), iov) in msgs.iter_mut().zip(addrs.iter_mut()).zip(iovs.iter_mut()) {
        m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let msgs = &mut msgs[..n];
    let mut done = 0;
    while done < msgs.len() {
        let left = &mut msgs[done..];
        // SAFETY: `left` holds initialised mmsghdr structs whose name and iovec point into
        // `addrs`, `iovs` and `batch.bufs`, all alive and unmoved for the call.
        let rc = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                left.as_mut_ptr(),
                left.len() as libc::c_uint,
                0,
            )
        };
        if let Ok(sent @ 1..) = usize::try_from(rc) {
            done += sent;
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        match send_error(e, batch.dsts[slots[done]])? {
            Sent::Busy => {
                return Ok(FamilySent {
                    count: done,
                    busy: true,
                });
            }
            // Refused for this destination: lost like any other probe; go on with the next.
            Sent::Refused | Sent::Yes => done += 1,
        }
    }
    Ok(FamilySent {
        count: done,
        busy: false,
    })
}

/// Writes `dst` (port 0) into `ss`; returns the address's length.
fn fill_sockaddr(ss: &mut libc::sockaddr_storage, dst: IpAddr) -> libc::socklen_t {
    let sa = SockAddr::from(match dst {
        IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, 0)),
        IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, 0, 0, 0)),
    });
    let len = sa.len();
    // SAFETY: `sa` holds `len` valid bytes of a socket address, at most the size of a
    // sockaddr_storage, and `ss` is one.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (ss as *mut libc::sockaddr_storage).cast::<u8>(),
            (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
        );
    }
    len
}

/// What a failed send means: [`Sent::Busy`] (local buffers full), [`Sent::Refused`] (this
/// destination cannot be sent to), or an error that makes scanning pointless.
fn send_error(e: std::io::Error, dst: IpAddr) -> Result<Sent, ScanError> {
    match e.raw_os_error() {
        Some(libc::ENOBUFS | libc::EAGAIN | libc::ENOMEM) => Ok(Sent::Busy),
        // Neighbour resolution failed, no route, or a local OUTPUT rule refused it:
        // the probe is lost like any other; the port ends up silent.
        Some(
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::EPERM
            | libc::EACCES
            | libc::EINVAL,
        ) => Ok(Sent::Refused),
        _ => Err(ScanError::Socket {
            what: format!("sending a probe to {dst}"),
            source: e,
        }),
    }
}

/// Packets in one [`SendBatch`]: enough to spread a syscall over many probes, few enough that
/// the last one leaves soon after its send time is recorded (each packet costs the sending
/// CPU several microseconds of the stacks' work on a local path, so a packet waits for the
/// ones before it in the batch).
pub(crate) const SEND_BATCH: usize = 16;

/// Largest probe packet (IPv4 header + TCP header with MSS, or UDP with the biggest payload).
const PROBE_MAX: usize = 128;

/// Probe packets built by one send thread, sent together by [`RawSender::send_batch`].
pub(crate) struct SendBatch {
    bufs: Box<[[u8; PROBE_MAX]; SEND_BATCH]>,
    lens: [usize; SEND_BATCH],
    dsts: [IpAddr; SEND_BATCH],
    retransmission: [bool; SEND_BATCH],
    n: usize,
}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            bufs: Box::new([[0u8; PROBE_MAX]; SEND_BATCH]),
            lens: [0; SEND_BATCH],
            dsts: [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED); SEND_BATCH],
            retransmission: [false; SEND_BATCH],
            n: 0,
        }
    }

    /// The buffer the next packet is built in (at least [`PROBE_MAX`] bytes); [`push`] then
    /// adds it. Only call it while the batch is not full.
    ///
    /// [`push`]: SendBatch::push
    pub fn next_buf(&mut self) -> &mut [u8] {
        let i = self.n.min(SEND_BATCH - 1);
        &mut self.bufs[i]
    }

    /// Adds the packet just built in [`SendBatch::next_buf`]: `len` bytes for `dst`;
    /// `retransmission` when it is not a port's first try. Returns whether the batch is now
    /// full (send it before building another).
    pub fn push(&mut self, len: usize, dst: IpAddr, retransmission: bool) -> bool {
        if self.n < SEND_BATCH {
            self.lens[self.n] = len.min(PROBE_MAX);
            self.dsts[self.n] = dst;
            self.retransmission[self.n] = retransmission;
            self.n += 1;
        }
        self.n == SEND_BATCH
    }

    /// Whether no packet is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// What [`RawSender::send_batch`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Packets not sent because the kernel's buffers were full.
    pub unsent: usize,
    /// Retransmissions among the packets sent (or refused for their destination).
    pub retransmissions: u64,
    /// [`Sent::Busy`] when the kernel's buffers were full and some packets were not sent
    /// (back off); else [`Sent::Yes`].
    pub outcome: Sent,
}

/// What happened to one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Handed to the kernel.
    Yes,
    /// Local buffers full: back off and send it again.
    Busy,
    /// Refused locally for this destination (no neighbour, no route, local firewall).
    Refused,
}

/// Receives every packet that arrives on any interface of the current namespace.
pub(crate) struct Receiver {
    sock: Socket,
}

/// Kernel statistics of the receive socket.
const PACKET_STATISTICS: i32 = 6;
const PACKET_IGNORE_OUTGOING: i32 = 23;

impl Receiver {
    /// Opens the packet socket; it starts queueing packets at once. A BPF filter keeps only
    /// what can answer a probe of this scan: ICMP/ICMPv6, and TCP/UDP to our source ports
    /// `base_sport..=base_sport + 15`; a busy host's other traffic never reaches us.
    pub fn open(kind: &'static str, base_sport: u16) -> Result<Self, ScanError> {
        let proto = i32::from((libc::ETH_P_ALL as u16).to_be());
        let sock = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(proto)))
            .map_err(raw_err(kind, "opening the packet receive socket"))?;
        attach_filter(&sock, reply_filter(base_sport))
            .map_err(sock_err("filtering the packet socket"))?;
        // Best effort: older kernels lack PACKET_IGNORE_OUTGOING; the probes then simply fail
        // to match our own outgoing packets.
        let _ = setsockopt_int(&sock, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1);
        // SO_RCVBUFFORCE goes past rmem_max when we have CAP_NET_ADMIN; fall back otherwise.
        if setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20).is_err() {
            let _ = sock.set_recv_buffer_size(32 << 20);
        }
        Ok(Receiver { sock })
    }

    /// Reads up to `batch.len()` queued packets without blocking (recvmmsg(2)); returns how
    /// many were read. Never blocks, so the sending thread never has to wake us per packet.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> usize {
        for (m, iov) in batch.msgs.iter_mut().zip(batch.iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_len = 0;
        }
        // SAFETY: `msgs` holds `len` initialised mmsghdr structs whose single iovec points
        // into `bufs`, which lives as long as `batch`.
        let n = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                batch.msgs.as_mut_ptr(),
                batch.msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(n).unwrap_or(0)
    }

    /// Packets the kernel dropped because our receive queue was full, since the last call.
    pub fn drops(&self) -> u32 {
        let mut st = [0u32; 2];
        let mut len = std::mem::size_of::<[u32; 2]>() as libc::socklen_t;
        // SAFETY: `st` is a valid buffer of `len` bytes for struct tpacket_stats.
        let rc = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                st.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 { st[1] } else { 0 }
    }
}

/// Buffers for [`Receiver::recv_batch`].
pub(crate) struct RecvBatch {
    bufs: Vec<[u8; 2048]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside only point into `bufs`, owned by the same struct.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Room for `n` packets.
    pub fn new(n: usize) -> Self {
        let mut bufs = vec![[0u8; 2048]; n];
        let iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is a valid empty header.
        let msgs = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        RecvBatch { bufs, iovs, msgs }
    }

    /// Packet `i` of the last batch.
    pub fn packet(&self, i: usize) -> &[u8] {
        let len = (self.msgs[i].msg_len as usize).min(self.bufs[i].len());
        &self.bufs[i][..len]
    }
}
