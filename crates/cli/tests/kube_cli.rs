//! The Kubernetes commands of the `portwarden` binary that run without a cluster: `crd` prints
//! exactly the chart's CRD file, and the cluster commands fail with a clear message (exit 1)
//! when there is no cluster to talk to.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
