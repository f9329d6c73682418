//! Small clients that run inside a lab namespace — an HTTP GET, a TCP knock from a chosen
//! source address, a UDP request/answer, an nmap port state — and [`wait_for`], the deadline
//! poll every lab helper waits with.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::{LabError, Netns, Nmap};

/// A transport protocol of a published or forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `"tcp"` or `"udp"`, as iptables and Docker spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// What an HTTP server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code of the status line.
    pub status: u16,
    /// Everything after the header.
    pub body: String,
}

/// Polls `check` until it returns `Some`, or fails with `what` after `timeout`. Polls every
/// 50 ms: a wait on a condition, never a sleep standing in for one.
///
/// # Errors
/// [`LabError::Timeout`] naming `what` and the last error `check` reported.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                return Err(LabError::Timeout {
                    what: what.to_string(),
                    seconds: timeout.as_secs(),
                    last,
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn http_get_once(addr: SocketAddr, timeout: Duration) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let host = match addr.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    write!(
        s,
        "GET / HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not HTTP: {text:?}"),
        )
    };
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(HttpResponse { status, body })
}

fn udp_once(addr: SocketAddr, payload: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let s = UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(timeout))?;
    s.connect(addr)?;
    s.send(payload)?;
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf)?;
    Ok(buf[..n].to_vec())
}

fn knock_once(source: IpAddr, addr: SocketAddr, timeout: Duration) -> std::io::Result<bool> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect_timeout(&addr.into(), timeout) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

impl Netns {
    /// `GET /` over HTTP/1.0 to `addr`, from inside this namespace.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the connection or the exchange fails (refused, timed out,
    /// not HTTP), [`LabError::Enter`] when the namespace cannot be entered.
    pub fn http_get(&self, addr: SocketAddr, timeout: Duration) -> Result<HttpResponse, LabError> {
        let ns = self.name.clone();
        self.run(move || http_get_once(addr, timeout))?
            .map_err(|source| LabError::Socket {
                what: format!("HTTP GET http://{addr}/"),
                namespace: ns,
                source,
            })
    }

    /// Sends one UDP datagram to `addr` from inside this namespace and returns the first
    /// answer.
    ///
    /// # Errors
    /// [`LabError::Socket`] when nothing answers within `timeout` or the socket fails.
    pub fn udp_request(
        &self,
        addr: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, LabError> {
        let ns = self.name.clone();
        let payload = payload.to_vec();
        self.run(move || udp_once(addr, &payload, timeout))?
            .map_err(|source| LabError::Socket {
                what: format!("UDP request to {addr}"),
                namespace: ns,
                source,
            })
    }

    /// Opens a TCP connection to `addr` from `source` (an address of this namespace) and
    /// closes it at once: one SYN on the wire, answered or not. `Ok(true)` when it connected,
    /// `Ok(false)` when it was refused (a reset) or timed out.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the socket cannot be made or bound to `source` (not an
    /// address of this namespace), [`LabError::Enter`] when the namespace cannot be entered.
    pub fn tcp_knock(
        &self,
        source: IpAddr,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<bool, LabError> {
        let ns = self.name.clone();
        self.run(move || knock_once(source, addr, timeout))?
            .map_err(|source_err| LabError::Socket {
                what: format!("TCP connection from {source} to {addr}"),
                namespace: ns,
                source: source_err,
            })
    }

    /// The state nmap reports for one port of `addr` (`open`, `closed`, `filtered`,
    /// `open|filtered`...), scanned from this namespace with [`Nmap`] and `-sS` (TCP) or
    /// `-sU` (UDP).
    ///
    /// # Errors
    /// As [`Nmap::run`] (nmap missing or failing, output not a report),
    /// [`LabError::Invalid`] when nmap's report has no row for the port.
    pub fn nmap_port_state(
        &self,
        addr: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> Result<String, LabError> {
        let scan = if protocol == Protocol::Tcp {
            "-sS"
        } else {
            "-sU"
        };
        let run = Nmap::new(&[scan])
            .ports(&port.to_string())
            .target(addr)
            .run(self)?;
        run.host(addr)
            .find(|r| r.port == port && r.protocol == protocol)
            .map(|r| r.state.clone())
            .ok_or_else(|| {
                LabError::Invalid(format!(
                    "nmap reported no {port}/{}:\n{}",
                    protocol.as_str(),
                    run.xml
                ))
            })
    }
}
