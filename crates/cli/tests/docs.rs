//! docs/cli.md, the command-line contract in the repository, kept in step with the binary:
//! every subcommand `portwarden --help` lists has its synopsis line (`portwarden NAME ...`) in
//! the `## Commands` block of docs/cli.md, and every command documented there exists.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");

/// The subcommands in the `Commands:` section of `portwarden --help` (clap's own `help` left
/// out: it is not part of the contract).
fn help_commands() -> BTreeSet<String> {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success(), "portwarden --help failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let section = text
        .split_once("\nCommands:\n")
        .map(|(_, rest)| rest)
        .expect("a Commands: section in portwarden --help");
    section
        .lines()
        .take_while(|l| !l.trim().is_empty())
        // `  name  summary`; a wrapped summary continues with more indentation.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The commands of docs/cli.md: the `portwarden NAME` lines of the code block under
/// `## Commands`.
fn documented_commands() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let section = text
        .split_once("\n## Commands\n")
        .map(|(_, rest)| rest)
        .expect("a `## Commands` section in docs/cli.md");
    let block = section
        .split("```")
        .nth(1)
        .expect("a code block in docs/cli.md's `## Commands`");
    block
        .lines()
        .filter_map(|l| l.strip_prefix("portwarden "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn docs_cli_md_lists_exactly_the_commands_of_help() {
    let help = help_commands();
    let docs = documented_commands();
    assert!(!help.is_empty(), "no commands read from portwarden --help");
    let undocumented: Vec<_> = help.difference(&docs).collect();
    let unknown: Vec<_> = docs.difference(&help).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/cli.md is out of step with portwarden --help: not documented {undocumented:?}, \
         documented but not a command {unknown:?}"
    );
}

#[test]
fn every_documented_command_has_help() {
    for name in documented_commands() {
        let out = Command::new(BIN).args([&name, "--help"]).output().unwrap();
        assert!(
            out.status.success(),
            "portwarden {name} --help (documented in docs/cli.md) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
