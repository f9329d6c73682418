//! TCP and UDP listeners bound inside a lab namespace.
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole life.
//! So each listener's socket is created by a short-lived thread that entered the namespace
//! ([`Netns::run`]); the thread that serves it afterwards can live anywhere. Every socket is
//! bound to `[::]` with `IPV6_V6ONLY` off, so one socket serves IPv4 and IPv6.
//!
//! Serving threads block with a short receive timeout and check a stop flag between waits, so
//! dropping a guard stops its thread promptly and closes the socket.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::{LabError, Netns};

/// How long a serving thread blocks before re-checking its stop flag.
const POLL: Duration = Duration::from_millis(50);

fn bind_in(ns: &Netns, port: u16, tcp: bool) -> Result<Socket, LabError> {
    let what = format!(
        "{} listener on port {port}",
        if tcp { "tcp" } else { "udp" }
    );
    let err = |source| LabError::Socket {
        what: what.clone(),
        namespace: ns.name.clone(),
        source,
    };
    let sock = ns
        .run(move || -> std::io::Result<Socket> {
            let (ty, proto) = if tcp {
                (Type::STREAM, Protocol::TCP)
            } else {
                (Type::DGRAM, Protocol::UDP)
            };
            let s = Socket::new(Domain::IPV6, ty, Some(proto))?;
            s.set_only_v6(false)?;
            s.set_reuse_address(true)?;
            let addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
            s.bind(&addr.into())?;
            if tcp {
                s.listen(1024)?;
            }
            s.set_read_timeout(Some(POLL))?;
            Ok(s)
        })?
        .map_err(err)?;
    Ok(sock)
}

/// A TCP listener inside a namespace that accepts every connection and closes it at once.
/// Stops and closes its socket when dropped.
#[derive(Debug)]
pub struct TcpListenerGuard {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpListenerGuard {
    /// The port it listens on (IPv4 and IPv6).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TcpListenerGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket inside a namespace: either echoing every datagram back to its sender, or bound
/// and silent (the kernel then sends no port-unreachable, and nothing answers).
#[derive(Debug)]
pub struct UdpListenerGuard {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _silent: Option<Socket>,
}

impl UdpListenerGuard {
    /// The port it is bound to (IPv4 and IPv6).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for UdpListenerGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Netns {
    /// Listens on TCP `port` (IPv4 and IPv6) inside this namespace; connections are accepted
    /// and closed immediately, so connect scans never fill the accept queue.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the socket cannot be created or bound (port in use, ...).
    pub fn tcp_listener(&self, port: u16) -> Result<TcpListenerGuard, LabError> {
        let sock = bind_in(self, port, true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tcp-{port}"))
            .spawn(move || {
                while !stop2.load(Ordering::SeqCst) {
                    // A timeout (EAGAIN) just loops to re-check the stop flag; an accepted
                    // connection is dropped, which closes it.
                    let _ = sock.accept();
                }
            })
            .map_err(|source| LabError::Spawn {
                command: format!("tcp listener thread for port {port}"),
                source,
            })?;
        Ok(TcpListenerGuard {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// Binds UDP `port` inside this namespace and echoes every datagram back to its sender.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the socket cannot be created or bound.
    pub fn udp_echo(&self, port: u16) -> Result<UdpListenerGuard, LabError> {
        let sock = bind_in(self, port, false)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("udp-{port}"))
            .spawn(move || {
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
                while !stop2.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        // SAFETY: recv_from initialised the first `n` bytes.
                        let data: Vec<u8> = buf[..n]
                            .iter()
                            .map(|b| unsafe { b.assume_init() })
                            .collect();
                        let reply = if data.is_empty() {
                            b"pong".to_vec()
                        } else {
                            data
                        };
                        let _ = sock.send_to(&reply, &from);
                    }
                }
            })
            .map_err(|source| LabError::Spawn {
                command: format!("udp echo thread for port {port}"),
                source,
            })?;
        Ok(UdpListenerGuard {
            port,
            stop,
            thread: Some(thread),
            _silent: None,
        })
    }

    /// Binds UDP `port` inside this namespace and never answers.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the socket cannot be created or bound.
    pub fn udp_silent(&self, port: u16) -> Result<UdpListenerGuard, LabError> {
        let sock = bind_in(self, port, false)?;
        Ok(UdpListenerGuard {
            port,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            _silent: Some(sock),
        })
    }
}
