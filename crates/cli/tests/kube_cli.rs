//! The Kubernetes commands of the `portwarden` binary that run without a cluster: `crd` prints
//! exactly the chart's CRD file, and the cluster commands fail with a clear message (exit 1)
//! when there is no cluster to talk to. And no secret in logs: against an API server that
//! answers 401, 403 and 500, at `RUST_LOG=trace`, the bearer token of the kubeconfig appears
//! nowhere in the agent's or the controller's output.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, Netns, skip_unless_lab};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn portwarden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portwarden"))
        .args(args)
        .current_dir(root())
        // No kubeconfig and no in-cluster service account: kube's client cannot configure.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("run portwarden")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn crd_prints_the_chart_copy() {
    let out = portwarden(&["crd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shipped =
        std::fs::read_to_string(root().join("charts/portwarden/crds/portwarden.io.yaml")).unwrap();
    assert_eq!(text(&out.stdout), shipped);
    assert!(text(&out.stdout).contains("name: portpolicies.portwarden.io"));
    assert!(text(&out.stdout).contains("name: portreports.portwarden.io"));
}

#[test]
fn cluster_commands_without_a_cluster_say_so() {
    for args in [
        vec!["controller", "--metrics-addr", "127.0.0.1:0"],
        vec![
            "agent",
            "--kube",
            "--node",
            "web-1",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    ] {
        let out = portwarden(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("failed to configure a Kubernetes client"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn help_has_examples() {
    for cmd in ["crd", "controller"] {
        let out = portwarden(&[cmd, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("Example"), "{cmd}");
    }
    let out = portwarden(&["agent", "--help"]);
    assert!(text(&out.stdout).contains("portwarden agent --kube"));
}

/// The secret: distinctive enough that any copy of it, or of its first half, is found.
const TOKEN: &str = "pw-test-token-5f1d9c2e8a7b4360a9e1c4d2b7f08e36";

/// A scripted API server on a listener: answers every request with 401, 403 or 500 in turn
/// (a Kubernetes `Status` body), records whether the bearer token arrived, and counts requests.
fn serve_errors(listener: TcpListener, seen_token: Arc<AtomicUsize>, requests: Arc<AtomicUsize>) {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let started = Instant::now();
        // The test ends well before this; the thread then exits with the test process.
        while started.elapsed() < Duration::from_secs(120) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let (seen_token, requests) = (seen_token.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                loop {
                    let mut head = Vec::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        head.push(line);
                    }
                    let mut body = vec![0u8; length];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if head.iter().any(|l| l.contains(&format!("Bearer {TOKEN}"))) {
                        seen_token.fetch_add(1, Ordering::SeqCst);
                    }
                    let n = requests.fetch_add(1, Ordering::SeqCst);
                    let (code, reason) = [
                        (401, "Unauthorized"),
                        (403, "Forbidden"),
                        (500, "Internal Server Error"),
                    ][n % 3];
                    let body = format!(
                        "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"{reason}\",\"reason\":\"{reason}\",\"code\":{code}}}"
                    );
                    let reply = format!(
                        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A kubeconfig in `dir` for an API server at `127.0.0.1:PORT`, with the bearer [`TOKEN`].
fn write_kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: lab\n  user:\n    token: {TOKEN}\ncontexts:\n- name: lab\n  context:\n    \
             cluster: lab\n    user: lab\ncurrent-context: lab\n"
        ),
    )
    .unwrap();
    kubeconfig
}

/// `portwarden ARGS` in the lab namespace `node`, with `kubeconfig` and no in-cluster
/// configuration; the caller sets the log level and the outputs.
fn in_node(node: &Netns, args: &[&str], kubeconfig: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &node.name,
        env!("CARGO_BIN_EXE_portwarden"),
    ])
    .args(args)
    .env("KUBECONFIG", kubeconfig)
    .env_remove("KUBERNETES_SERVICE_HOST")
    .env_remove("KUBERNETES_SERVICE_PORT")
    .stdin(Stdio::null());
    c
}

/// A child process killed when dropped (also when an assertion fails).
struct Killed(Option<Child>);

impl Killed {
    fn finish(mut self) -> Output {
        let mut child = self.0.take().unwrap();
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn no_token_in_logs_on_api_errors_at_trace_level() {
    // The agent manages netfilter: it runs in a lab namespace, never in the root one, and
    // the scripted API server listens on that namespace's loopback.
    skip_unless_lab!();
    let lab = Lab::builder("secrets")
        .nodes(1)
        .scanners(1)
        .build()
        .unwrap();
    let node = lab.node(0);
    let listener = node
        .run(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen_token = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    serve_errors(listener, seen_token.clone(), requests.clone());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), port);
    for args in [
        vec![
            "agent",
            "--kube",
            "--node",
            "web-1",
            "--metrics-addr",
            "127.0.0.1:0",
            "--refresh",
            "3600",
        ],
        vec!["controller", "--metrics-addr", "127.0.0.1:0"],
    ] {
        let before = requests.load(Ordering::SeqCst);
        let child = in_node(node, &args, &kubeconfig)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Killed(Some(child));
        // Until every error kind was answered twice, or the process gave up (the controller
        // exits on the first refusal of its leader election).
        let until = Instant::now() + Duration::from_secs(30);
        while requests.load(Ordering::SeqCst) < before + 6
            && Instant::now() < until
            && child.0.as_mut().unwrap().try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let served = requests.load(Ordering::SeqCst) - before;
        let out = child.finish();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(served >= 1, "{args:?}: no API request; stderr:\n{stderr}");
        // The requests themselves were logged, at trace level: the check below has material.
        assert!(
            stderr.contains("TRACE") && stderr.contains(&format!("127.0.0.1:{port}")),
            "{args:?}: the requests were not logged at trace level: {stderr}"
        );
        for needle in [TOKEN, &TOKEN[..TOKEN.len() / 2], &TOKEN[TOKEN.len() / 2..]] {
            assert!(
                !stdout.contains(needle) && !stderr.contains(needle),
                "{args:?}: the token (or part of it) is in the output:\n{stdout}\n{stderr}"
            );
        }
    }
    assert!(
        seen_token.load(Ordering::SeqCst) > 0,
        "the API server never saw the token: the test would prove nothing"
    );
}

/// Issue 13 item 12: in Kubernetes mode there is nothing to reload (policies come from the API
/// server's watch): SIGHUP is logged and ignored by the agent and by the controller, which
/// keep running and serving.
#[test]
fn kube_agent_and_controller_log_and_ignore_sighup() {
    use portwarden_reconcile::inside::http_get;
    skip_unless_lab!();
    let lab = Lab::builder("hup").nodes(1).scanners(1).build().unwrap();
    let node = lab.node(0);
    // An API server that takes connections and never answers: both commands stay at their
    // first request, which is all this test needs.
    let api = node
        .run(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let port = api.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), port);
    let http = "127.0.0.1:19750";
    for args in [
        vec![
            "agent",
            "--kube",
            "--node",
            "web-1",
            "--metrics-addr",
            http,
            "--refresh",
            "3600",
        ],
        vec!["controller", "--metrics-addr", http],
    ] {
        let log = dir.path().join(format!("{}.log", args[0]));
        let child = in_node(node, &args, &kubeconfig)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut child = Killed(Some(child));
        let pid = child.0.as_ref().unwrap().id().to_string();
        // Up once its HTTP endpoint answers (any status: the agent's loop has no intent yet).
        let answers = || {
            let addr = http.parse().unwrap();
            match node.run(move || http_get(addr, "/healthz", Duration::from_secs(2))) {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => e.contains("unexpected status"),
                Err(_) => false,
            }
        };
        let until = Instant::now() + Duration::from_secs(20);
        while !answers() {
            assert!(Instant::now() < until, "{args:?}: never served HTTP");
            assert!(
                child.0.as_mut().unwrap().try_wait().unwrap().is_none(),
                "{args:?}: exited at start: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if let Some(exit) = child.0.as_mut().unwrap().try_wait().unwrap() {
                panic!("{args:?}: exited on SIGHUP ({exit}); log:\n{text}");
            }
            if text.contains("SIGHUP") {
                assert!(text.contains("ignored"), "{args:?}: {text}");
                break;
            }
            assert!(
                Instant::now() < until,
                "{args:?}: SIGHUP not logged: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(answers(), "{args:?}: stopped serving after SIGHUP");
        assert!(child.0.as_mut().unwrap().try_wait().unwrap().is_none());
        drop(child.finish());
    }
    drop(api);
}
