//! A real Docker engine inside a lab node's network namespace: [`DockerEngine`] starts
//! `dockerd` there, imports the project's debootstrap root filesystem as an image (no
//! registry), runs containers that publish ports (`-p 8080:80`, `-p 5353:53/udp`), and takes
//! everything down again on drop.
//!
//! # How the engine runs
//!
//! `nsenter --net=/var/run/netns/NODE dockerd ...` — only the network namespace is the node's;
//! mounts, cgroups and PIDs are the machine's (`ip netns exec` would remount `/sys` and hide
//! the cgroup mounts dockerd needs). Everything of the engine lives in one short directory
//! `/tmp/pwd-PID-N`: an empty `--config-file` (so `/etc/docker/daemon.json` of the machine's
//! own engine does not apply), `--data-root`, `--exec-root` (where dockerd starts its own
//! containerd: no state is shared with the machine's engine), `--pidfile`, the API socket
//! `-H unix://.../d.sock` and the log. The bridge is `--bip 10.215.X.1/24` and
//! `--fixed-cidr-v6 fd00:215:X::/80` with `X` from a [`SubnetLease`], so concurrent labs and the
//! machine's `docker0` (172.17.0.0/16) never share a network. IPv6 publishing works with this
//! dockerd (20.10) behind `--experimental --ip6tables`: it writes the same DNAT/FORWARD rules
//! with ip6tables as with iptables. dockerd calls the `iptables` on `PATH`, so its rules land
//! in the backend that binary belongs to (`iptables-nft` on Debian 12).
//!
//! Storage: `fuse-overlayfs` when it is installed and `/dev/fuse` exists; when dockerd cannot
//! start with it, the engine retries once with `vfs` and says so on standard error
//! ([`DockerEngine::storage_driver`] tells which one runs). `PORTWARDEN_LAB_STORAGE_DRIVER=vfs`
//! (or any driver) forces one driver, with no fallback.
//!
//! # Cleanup
//!
//! Drop removes the containers (`docker rm -f -v`), stops dockerd (SIGTERM, up to 20 s, then
//! SIGKILL), kills what is left of its processes (containerd, shims, docker-proxy: every
//! process whose command line names the engine's directory), lazily unmounts everything still
//! mounted under the directory, and removes it. Docker leaves its iptables rules behind in the
//! node's namespace: they go when the [`Lab`](crate::Lab) deletes the namespace. A killed run's
//! directories are cleaned the same way by the next [`DockerEngine::start`].

use std::ffi::CString;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::client::wait_for;
use crate::netns::show;
use crate::{LabError, Netns, Protocol, SubnetLease};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The tag [`DockerEngine::import_base_image`] gives the imported root filesystem.
pub const LAB_IMAGE: &str = "portwarden-base:lab";

/// How long dockerd may take to answer `docker info` (a first start on 2 busy cores takes a
/// few seconds).
const READY: Duration = Duration::from_secs(60);

/// How long containers' services may take to answer, and dockerd to exit on SIGTERM.
const SERVICE_READY: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(20);

/// One port to publish: `-p HOST:CONTAINER[/udp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port on the node.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
}

impl PortMap {
    /// `-p HOST:CONTAINER` (TCP).
    pub fn tcp(host_port: u16, container_port: u16) -> PortMap {
        PortMap {
            protocol: Protocol::Tcp,
            host_port,
            container_port,
        }
    }

    /// `-p HOST:CONTAINER/udp`.
    pub fn udp(host_port: u16, container_port: u16) -> PortMap {
        PortMap {
            protocol: Protocol::Udp,
            host_port,
            container_port,
        }
    }
}

/// One binding Docker reports for a published port (`docker inspect`,
/// `.NetworkSettings.Ports`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The node address it is bound to (`0.0.0.0` or `::` for all).
    pub host_ip: IpAddr,
    /// The port on the node.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
}

/// A running container of a [`DockerEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full container id.
    pub id: String,
    /// The name given to `docker run --name`.
    pub name: String,
    /// Its address on the engine's bridge.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address on the bridge, when the engine has IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// What Docker published, as Docker reports it.
    pub published: Vec<Published>,
    /// The body its web servers answer `GET /` with (it names the container).
    pub http_body: String,
}

/// A `dockerd` running in a lab node's network namespace (how it runs: the crate's *Forwarded
/// ports* and `docs/lab.md`). Stops and cleans up on drop.
#[derive(Debug)]
pub struct DockerEngine {
    node: Netns,
    dir: PathBuf,
    child: Option<Child>,
    storage_driver: String,
    lease: SubnetLease,
    /// Container ids with the host pid of their first process (0 until known).
    containers: Vec<(String, i32)>,
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Processes whose command line mentions `dir` (the engine's own processes).
fn pids_mentioning(dir: &Path) -> Vec<i32> {
    // Every argument of the engine's processes names a path inside the directory: matching
    // "DIR/" keeps /tmp/pwd-1-1 from matching /tmp/pwd-1-10's processes.
    let needle = format!("{}/", dir.to_string_lossy());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(me))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Whether `pid` is a running (not exited) process of container `id`, told by its cgroup.
pub(crate) fn container_process_alive(pid: i32, id: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(") ")?.1.chars().next()?;
            Some(state == 'Z' || state == 'X')
        })
        .unwrap_or(true);
    let in_container = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|c| c.contains(id))
        .unwrap_or(false);
    in_container && !zombie
}

fn kill_pids(pids: &[i32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

fn unmount_under(dir: &Path) {
    // Several passes: a lazy unmount of a parent can reveal a mount stacked below it.
    for _ in 0..4 {
        let points = mounts_under(dir);
        if points.is_empty() {
            return;
        }
        for p in points {
            if let Ok(c) = CString::new(p) {
                // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
}

/// Kills, unmounts and removes what a dead process's engine left under `/tmp/pwd-PID-N`.
fn cleanup_stale_engines() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("pwd-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        kill_pids(&pids_mentioning(&dir));
        unmount_under(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The debootstrap root filesystem tarball of the host's Debian release: `$PORTWARDEN_ROOTFS`
/// when set, otherwise what `scripts/image.sh --rootfs-only` makes (or finds cached under
/// `/var/cache/portwarden`; the first run takes about a minute and needs Debian's mirror).
///
/// # Errors
/// [`LabError::CommandFailed`] when the script fails (debootstrap missing, no mirror),
/// [`LabError::Invalid`] when the tarball it names does not exist.
pub fn rootfs_tarball() -> Result<PathBuf, LabError> {
    if let Some(p) = std::env::var_os("PORTWARDEN_ROOTFS") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LabError::Invalid(format!(
                "PORTWARDEN_ROOTFS={} is not a file",
                p.display()
            )))
        };
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/image.sh");
    let out = crate::netns::run_checked("bash", &[script, "--rootfs-only"])?;
    let path = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(LabError::Invalid(format!(
            "{script} --rootfs-only printed {out:?}, which is not a file"
        )))
    }
}

impl DockerEngine {
    /// Checks that a lab engine can run here: `dockerd`, `docker` and `nsenter` on PATH.
    ///
    /// # Errors
    /// [`LabError::ToolMissing`] naming the missing program and its Debian package.
    pub fn check_environment() -> Result<(), LabError> {
        for (tool, package) in [
            ("dockerd", "docker.io"),
            ("docker", "docker.io"),
            ("nsenter", "util-linux"),
        ] {
            if !on_path(tool) {
                return Err(LabError::ToolMissing {
                    tool: tool.into(),
                    package: package.into(),
                });
            }
        }
        Ok(())
    }

    /// Starts `dockerd` in `node`'s network namespace and waits (up to 60 s) until it answers
    /// `docker info`.
    ///
    /// # Errors
    /// [`LabError::ToolMissing`] (see [`DockerEngine::check_environment`]),
    /// [`LabError::Docker`] with the end of dockerd's log when it exits or does not answer in
    /// time with any storage driver.
    pub fn start(node: &Netns) -> Result<DockerEngine, LabError> {
        Self::check_environment()?;
        cleanup_stale_engines();
        let lease = SubnetLease::claim()?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/pwd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("c.json"), "{}\n"))
            .map_err(|e| LabError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        let mut engine = DockerEngine {
            node: node.clone(),
            dir,
            child: None,
            storage_driver: String::new(),
            lease,
            containers: Vec::new(),
        };
        let mut drivers = Vec::new();
        let forced = std::env::var("PORTWARDEN_LAB_STORAGE_DRIVER").ok();
        if let Some(d) = forced.as_deref() {
            eprintln!("lab docker: storage driver {d} (PORTWARDEN_LAB_STORAGE_DRIVER)");
            drivers.push(d);
        } else if on_path("fuse-overlayfs") && Path::new("/dev/fuse").exists() {
            drivers.extend(["fuse-overlayfs", "vfs"]);
        } else {
            eprintln!(
                "lab docker: fuse-overlayfs or /dev/fuse missing; using the vfs storage driver"
            );
            drivers.push("vfs");
        }
        let mut last = None;
        for driver in drivers {
            match engine.spawn(driver) {
                Ok(()) => {
                    eprintln!(
                        "lab docker: dockerd ready in {} with storage driver {driver} ({})",
                        engine.node.name,
                        engine.host()
                    );
                    return Ok(engine);
                }
                Err(e) => {
                    eprintln!("lab docker: dockerd with storage driver {driver} failed: {e}");
                    engine.stop_daemon();
                    kill_pids(&pids_mentioning(&engine.dir));
                    unmount_under(&engine.dir);
                    let _ = std::fs::remove_dir_all(engine.dir.join("root"));
                    let _ = std::fs::remove_dir_all(engine.dir.join("run"));
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| LabError::Invalid("no storage driver to try".into())))
    }

    fn spawn(&mut self, driver: &str) -> Result<(), LabError> {
        let sock = self.host();
        if sock.len() > 100 {
            return Err(LabError::Invalid(format!(
                "socket path {sock} is too long for a unix socket (108 bytes)"
            )));
        }
        let args = self.dockerd_args(driver, &sock);
        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LabError::Invalid(format!("cannot open {}: {e}", log_path.display())))?;
        let err_log = log
            .try_clone()
            .map_err(|e| LabError::Invalid(format!("cannot dup the log: {e}")))?;
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = Command::new("nsenter")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: show("nsenter", &argv),
                source,
            })?;
        self.child = Some(child);
        self.storage_driver = driver.to_string();
        let ready = wait_for("dockerd to answer docker info", READY, || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Ok(Err(format!("dockerd exited ({status})")));
            }
            let out = Command::new("docker")
                .args(["-H", &sock, "info", "--format", "{{.ServerVersion}}"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(Ok(()))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        });
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(what)) => Err(self.error(&what)),
            Err(e) => Err(self.error(&e.to_string())),
        }
    }

    /// `nsenter`'s arguments for this engine's dockerd: into the node's namespace, everything
    /// under its own directory, its bridge and IPv6 range, on `driver` storage.
    fn dockerd_args(&self, driver: &str, sock: &str) -> Vec<String> {
        let d = self.dir.to_string_lossy().into_owned();
        let netns = format!("--net=/var/run/netns/{}", self.node.name);
        let bip = format!("{}/24", self.gateway_v4());
        let v6 = format!("{}/80", self.lease.docker_v6());
        let args: Vec<String> = [
            netns.as_str(),
            "dockerd",
            "--config-file",
            &format!("{d}/c.json"),
            "--storage-driver",
            driver,
            "--data-root",
            &format!("{d}/root"),
            "--exec-root",
            &format!("{d}/run"),
            "--pidfile",
            &format!("{d}/pid"),
            "-H",
            sock,
            "--bip",
            &bip,
            "--ipv6",
            "--fixed-cidr-v6",
            &v6,
            "--experimental",
            "--ip6tables",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args
    }

    fn error(&self, what: &str) -> LabError {
        LabError::Docker {
            what: what.to_string(),
            log: self.log_path().display().to_string(),
            tail: tail(&self.log_path(), 15),
        }
    }

    /// The `-H` value of this engine's API: `unix:///tmp/pwd-PID-N/d.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}/d.sock", self.dir.display())
    }

    /// The engine's directory (data root, exec root, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// dockerd's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The storage driver dockerd runs with: `fuse-overlayfs` or `vfs`.
    pub fn storage_driver(&self) -> &str {
        &self.storage_driver
    }

    /// The node the engine runs in.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// The bridge's IPv4 address, `10.215.X.1` (network `10.215.X.0/24`).
    pub fn gateway_v4(&self) -> Ipv4Addr {
        let n = self.lease.docker_v4().octets();
        Ipv4Addr::new(n[0], n[1], n[2], 1)
    }

    /// The bridge's IPv6 network, `fd00:215:X::` (/80).
    pub fn network_v6(&self) -> Ipv6Addr {
        self.lease.docker_v6()
    }

    /// dockerd's process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Runs `docker -H unix://SOCK args...` and returns its standard output.
    ///
    /// # Errors
    /// [`LabError::Spawn`] / [`LabError::CommandFailed`] as for any command.
    pub fn docker(&self, args: &[&str]) -> Result<String, LabError> {
        let host = self.host();
        let mut v = vec!["-H", host.as_str()];
        v.extend_from_slice(args);
        crate::netns::run_checked("docker", &v)
    }

    /// Imports the debootstrap root filesystem ([`rootfs_tarball`]) into this engine as
    /// [`LAB_IMAGE`] (`docker import`, no registry), unless it is there already; returns the tag.
    ///
    /// # Errors
    /// As [`rootfs_tarball`] and [`DockerEngine::docker`].
    pub fn import_base_image(&self) -> Result<String, LabError> {
        if self.docker(&["image", "inspect", LAB_IMAGE]).is_ok() {
            return Ok(LAB_IMAGE.to_string());
        }
        let tarball = rootfs_tarball()?;
        let t = tarball.to_string_lossy().into_owned();
        self.docker(&[
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            &t,
            LAB_IMAGE,
        ])?;
        Ok(LAB_IMAGE.to_string())
    }

    /// Runs a container `name` of [`LAB_IMAGE`] (import it first) that publishes `ports`: on each
    /// TCP container port a statically linked busybox (`busybox-static`, bind-mounted
    /// read-only) serves `busybox httpd` — `GET /` answers 200 with
    /// [`Container::http_body`] — and on each UDP container port a Perl loop (the image's
    /// `perl-base`) answers every datagram `D` with `pong:D`. Returns once every service
    /// answers from the node (up to 30 s), with what Docker reports it published.
    ///
    /// # Errors
    /// [`LabError::ToolMissing`] without `/usr/bin/busybox` (static), [`LabError::Docker`]
    /// when `docker run` fails, the services do not answer or `docker inspect` cannot be read.
    pub fn run_web(&mut self, name: &str, ports: &[PortMap]) -> Result<Container, LabError> {
        let busybox = Path::new("/bin/busybox");
        let busybox = if busybox.is_file() {
            busybox.to_path_buf()
        } else {
            PathBuf::from("/usr/bin/busybox")
        };
        if !busybox.is_file() {
            return Err(LabError::ToolMissing {
                tool: "busybox".into(),
                package: "busybox-static".into(),
            });
        }
        let www = self.dir.join(format!("www-{name}"));
        let body = format!("portwarden lab container {name}\n");
        std::fs::create_dir_all(&www)
            .and_then(|()| std::fs::write(www.join("index.html"), &body))
            .and_then(|()| {
                std::fs::write(
                    www.join("udp-echo.pl"),
                    "use IO::Socket::IP;\n\
                     my $s = IO::Socket::IP->new(LocalHost => '::', LocalPort => $ARGV[0], \
                     Proto => 'udp', V6Only => 0) or die \"udp-echo: bind $ARGV[0]: $@\";\n\
                     while (1) { my $peer = $s->recv(my $buf, 2048); \
                     $s->send(\"pong:$buf\", 0, $peer) if defined $peer; }\n",
                )
            })
            .map_err(|e| LabError::Invalid(format!("cannot write {}: {e}", www.display())))?;
        let mut script = String::new();
        for p in ports {
            match p.protocol {
                Protocol::Tcp => script.push_str(&format!(
                    "/bin/busybox httpd -f -p {} -h /www & ",
                    p.container_port
                )),
                Protocol::Udp => {
                    script.push_str(&format!("perl /www/udp-echo.pl {} & ", p.container_port));
                }
            }
        }
        script.push_str("wait");
        let mounts = [
            format!("{}:/bin/busybox:ro", busybox.display()),
            format!("{}:/www:ro", www.display()),
        ];
        let publish: Vec<String> = ports
            .iter()
            .map(|p| match p.protocol {
                Protocol::Tcp => format!("{}:{}", p.host_port, p.container_port),
                Protocol::Udp => format!("{}:{}/udp", p.host_port, p.container_port),
            })
            .collect();
        let mut args = vec![
            "run", "-d", "--name", name, "-v", &mounts[0], "-v", &mounts[1],
        ];
        for p in &publish {
            args.push("-p");
            args.push(p);
        }
        args.extend_from_slice(&[LAB_IMAGE, "/bin/sh", "-c", &script]);
        let id = self
            .docker(&args)
            .map_err(|e| self.error(&format!("docker run {name}: {e}")))?
            .trim()
            .to_string();
        let pid = self
            .docker(&["inspect", "-f", "{{.State.Pid}}", &id])
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .unwrap_or(0);
        self.containers.push((id.clone(), pid));
        let mut container = self.inspect(&id, name)?;
        container.http_body = body;
        self.wait_services(&container, ports)?;
        Ok(container)
    }

    fn inspect(&self, id: &str, name: &str) -> Result<Container, LabError> {
        let raw = self
            .docker(&["inspect", "-f", "{{json .NetworkSettings}}", id])
            .map_err(|e| self.error(&format!("docker inspect {name}: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(raw.trim())
            .map_err(|e| self.error(&format!("docker inspect {name}: not JSON ({e}): {raw}")))?;
        let ipv4 = v["IPAddress"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| self.error(&format!("container {name} has no IPv4 address: {raw}")))?;
        let ipv6 = v["GlobalIPv6Address"].as_str().and_then(|a| a.parse().ok());
        let mut published = Vec::new();
        if let Some(ports) = v["Ports"].as_object() {
            for (key, binds) in ports {
                let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
                let protocol = if proto == "udp" {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                };
                let Ok(container_port) = port.parse::<u16>() else {
                    continue;
                };
                for b in binds.as_array().into_iter().flatten() {
                    let host_ip = b["HostIp"].as_str().and_then(|a| a.parse().ok());
                    let host_port = b["HostPort"].as_str().and_then(|p| p.parse().ok());
                    if let (Some(host_ip), Some(host_port)) = (host_ip, host_port) {
                        published.push(Published {
                            protocol,
                            host_ip,
                            host_port,
                            container_port,
                        });
                    }
                }
            }
        }
        published.sort_by_key(|p| (p.host_port, p.host_ip.is_ipv6()));
        Ok(Container {
            id: id.to_string(),
            name: name.to_string(),
            ipv4,
            ipv6,
            published,
            http_body: String::new(),
        })
    }

    /// Waits until every service of `c` answers from the node's namespace (straight to the
    /// container's address, not through the published ports).
    fn wait_services(&self, c: &Container, ports: &[PortMap]) -> Result<(), LabError> {
        for p in ports {
            let addr = SocketAddr::new(IpAddr::V4(c.ipv4), p.container_port);
            let what = format!("{} {}/{} to answer", c.name, addr, p.protocol.as_str());
            let node = self.node.clone();
            let body = c.http_body.clone();
            wait_for(&what, SERVICE_READY, || match p.protocol {
                Protocol::Tcp => match node.http_get(addr, Duration::from_secs(2)) {
                    Ok(r) if r.status == 200 && r.body == body => Ok(()),
                    Ok(r) => Err(format!("answered {r:?}")),
                    Err(e) => Err(e.to_string()),
                },
                Protocol::Udp => match node.udp_request(addr, b"ready", Duration::from_millis(500))
                {
                    Ok(a) if a == b"pong:ready" => Ok(()),
                    Ok(a) => Err(format!("answered {:?}", String::from_utf8_lossy(&a))),
                    Err(e) => Err(e.to_string()),
                },
            })
            .map_err(|e| self.error(&e.to_string()))?;
        }
        Ok(())
    }

    /// SIGTERM, wait up to 20 s, then SIGKILL; reaps dockerd. Idempotent.
    fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let exited = wait_for("dockerd to exit", STOP, || match child.try_wait() {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("still running".into()),
            Err(_) => Ok(()),
        });
        if exited.is_err() {
            eprintln!("lab docker: dockerd did not exit within {STOP:?} of SIGTERM; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Removes the containers, stops dockerd and cleans its directory (what drop does), and
    /// reports what could not be cleaned.
    ///
    /// # Errors
    /// [`LabError::Docker`] naming mounts or processes that are still there afterwards.
    pub fn stop(mut self) -> Result<(), LabError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), LabError> {
        if self.child.is_some() {
            for (id, _) in &self.containers {
                let _ = self.docker(&["rm", "-f", "-v", id]);
            }
            self.stop_daemon();
        }
        // A container whose daemon died first (the lab's namespace deleted under it, say) keeps
        // running without its shim: kill its processes, recognised by the container's cgroup.
        for (id, pid) in std::mem::take(&mut self.containers) {
            if container_process_alive(pid, &id) {
                eprintln!("lab docker: killing container {id}'s process {pid} left running");
                kill_pids(&[pid]);
                // Killing a container's first process ends its PID namespace; wait until it
                // has exited (a zombie waiting for its reaper has).
                let _ = wait_for("a killed container process to exit", STOP, || {
                    if container_process_alive(pid, &id) {
                        Err(format!("process {pid} still runs"))
                    } else {
                        Ok(())
                    }
                });
            }
        }
        let leftovers = pids_mentioning(&self.dir);
        kill_pids(&leftovers);
        unmount_under(&self.dir);
        let mounts = mounts_under(&self.dir);
        let procs = pids_mentioning(&self.dir);
        let log_tail = tail(&self.log_path(), 15);
        let removed = std::fs::remove_dir_all(&self.dir);
        if !mounts.is_empty() || !procs.is_empty() {
            return Err(LabError::Docker {
                what: format!(
                    "after stopping: mounts left {mounts:?}, processes left {procs:?} \
                     (killed before: {leftovers:?})"
                ),
                log: self.log_path().display().to_string(),
                tail: log_tail,
            });
        }
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(LabError::Invalid(format!(
                "cannot remove {}: {e}",
                self.dir.display()
            )));
        }
        if !leftovers.is_empty() {
            eprintln!("lab docker: killed processes dockerd left behind: {leftovers:?}");
        }
        Ok(())
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!(
                "lab docker: cleanup of {} incomplete: {e}",
                self.dir.display()
            );
        }
    }
}
