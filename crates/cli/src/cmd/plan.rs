//! `portwarden plan`: what `apply` would change in this network namespace's netfilter, without
//! changing it. Exit 0 when converged, 2 when changes are pending. Also home of the netfilter
//! flags `plan`, `apply` and `reset` share.

use std::process::ExitCode;

use anyhow::Context;
use portwarden_netfilter::forwarding::Managed;
use portwarden_netfilter::{
    BackendChoice, DEFAULT_FAILSAFE, ErrorKind, Failsafe, Netfilter, Options, Plan,
};
use portwarden_policy::{NodeIntent, text};
use serde::Serialize;

use crate::Outcome;
use crate::args::{Format, PolicyArgs};

/// The netfilter flags `plan`, `apply` and `reset` share, `[--backend auto|nft|legacy]
/// [--wait SECS]`, and the [`Netfilter`] handle they open ([`NetfilterArgs::netfilter`]).
#[derive(clap::Args, Debug, Clone)]
pub struct NetfilterArgs {
    /// iptables backend: auto (whichever holds the host's rules), nft or legacy.
    #[arg(long, value_name = "BACKEND", default_value = "auto")]
    pub backend: String,
    /// Seconds to wait for another writer of this network namespace (another portwarden
    /// apply, reset or agent; the xtables lock under the legacy backend) before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub wait: u32,
}

impl NetfilterArgs {
    /// Detects the backend and finds its tools, after checking for CAP_NET_ADMIN (without
    /// it the tools fail in ways that do not say why).
    pub fn netfilter(&self) -> anyhow::Result<Netfilter> {
        crate::caps::require(crate::caps::Cap::NetAdmin, "read and write netfilter rules")?;
        let backend: BackendChoice = self
            .backend
            .parse()
            .with_context(|| format!("invalid --backend \"{}\"", self.backend))?;
        Ok(Netfilter::detect(&Options {
            backend,
            lock_wait_secs: self.wait,
            owners: true,
            ..Options::default()
        })?)
    }
}

/// Warns on standard error when a portwarden agent manages this network namespace: a hand-run
/// `apply` or `reset` still works (it takes the writer lock), but the agent writes its own
/// intent back at its next refresh.
pub fn warn_if_an_agent_runs(what: &str) {
    let dir = portwarden_netfilter::writer::lock_dir();
    if let Some(agent) = portwarden_netfilter::writer::running_agent(&dir) {
        eprintln!(
            "warning: a portwarden agent manages this network namespace ({agent}); this {what} \
             goes ahead, but the agent will restore its own intent at its next refresh. For a \
             lasting change, change the agent's policies (or stop the agent first)."
        );
    }
}

/// Adds the fix to an iptables error about the xtables lock file (legacy backend): the file is
/// usually root's with mode 0600, so an agent running as another user with only its two
/// capabilities cannot open it.
pub fn explain_lock_error(e: portwarden_netfilter::Error) -> anyhow::Error {
    let kind = e.kind();
    let e = anyhow::Error::new(e);
    if kind == ErrorKind::XtablesLockDenied {
        return e.context(
            "the xtables lock file cannot be opened by this user: under the legacy backend every \
             iptables writer serialises on it. Create it writable for portwarden's group before \
             start (systemd-tmpfiles: `f /run/xtables.lock 0660 root portwarden`), or run as uid 0 \
             with only CAP_NET_ADMIN and CAP_NET_RAW; see docs/least-privilege.md",
        );
    }
    e
}

/// The policy and netfilter arguments of `plan` and `apply`.
#[derive(clap::Args, Debug)]
pub struct IntentArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub netfilter: NetfilterArgs,
    /// Failsafe ports no policy may block (left to the host's own rules): `tcp:22,udp:68,...`
    /// or `none`.
    #[arg(long, value_name = "LIST", default_value = DEFAULT_FAILSAFE)]
    pub failsafe: String,
}

/// What `plan` and `apply` work from.
pub struct Resolved {
    pub node: String,
    /// The instant the intent was compiled at.
    pub now: portwarden_policy::Timestamp,
    pub intent: NodeIntent,
    pub failsafe: Failsafe,
    pub netfilter: Netfilter,
}

impl IntentArgs {
    /// Loads the policies, compiles the node's intent, parses the failsafe list, detects the
    /// backend. Everything that can be wrong with the input fails here, before any read.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let failsafe: Failsafe = self
            .failsafe
            .parse()
            .with_context(|| format!("invalid --failsafe \"{}\"", self.failsafe))?;
        let (loaded, node) = self.policy.load()?;
        let now = portwarden_policy::Timestamp::now();
        let intent = loaded.policies.compile_at(&node.labels, now);
        Ok(Resolved {
            node: node.name,
            now,
            intent,
            failsafe,
            netfilter: self.netfilter.netfilter()?,
        })
    }
}

/// Arguments of `plan`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (in a lab namespace: ip netns exec NS portwarden plan ...):\n  portwarden plan -f examples/ --inventory examples/inventory.yaml --node web-1 -o json\n\nExit codes: 0 no changes, 2 changes pending, 1 error."
)]
pub struct Args {
    #[command(flatten)]
    intent: IntentArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
}

/// `plan -o json`: the docs/cli.md shape (`changes`, `add`, `delete`) and the details.
#[derive(Serialize)]
struct PlanOutput<'a> {
    node: &'a str,
    backend: &'a str,
    #[serde(flatten)]
    plan: &'a Plan,
    /// Managed ports the nat table forwards to a container or pod.
    forwarded: &'a [Managed],
    /// Entries whose expiry falls before the next refresh.
    expiring: &'a [Expiring],
}

/// The managed ports this namespace's `nat` table DNATs elsewhere; a warning (and none) when
/// the table cannot be read, which only costs the explanation: the forward path enforces the
/// intent either way.
pub fn forwarded(netfilter: &Netfilter, intent: &NodeIntent) -> Vec<Managed> {
    match netfilter.forwards() {
        Ok(f) => portwarden_netfilter::forwarding::managed(&f, intent),
        Err(e) => {
            eprintln!(
                "warning: could not read the nat table, so forwarded ports are not named: {}",
                text::printable(&e.to_string())
            );
            Vec::new()
        }
    }
}

/// An entry of the intent whose expiry falls before the next refresh (see [`expiring`]).
#[derive(Serialize, Debug, PartialEq)]
pub struct Expiring {
    /// Policy name.
    pub policy: String,
    /// Entry index.
    pub entry: usize,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// The entry's port ranges, as `80,8000-8100`.
    pub ports: String,
    /// The state it enforces until then.
    pub state: &'static str,
    /// The instant, RFC 3339 in UTC.
    pub expires: String,
    /// Seconds from now.
    pub in_seconds: i64,
}

/// The entries of `intent` whose expiry falls within `window_secs` of `now`, soonest first.
/// For a one-off plan or apply the window is the agent's default `--refresh` interval
/// ([`crate::cmd::agent::DEFAULT_REFRESH_SECS`]): an agent with that interval removes them at
/// its next refresh, and until then the kernel's time match has already stopped them.
pub fn expiring(
    intent: &NodeIntent,
    now: portwarden_policy::Timestamp,
    window_secs: u64,
) -> Vec<Expiring> {
    let window = i64::try_from(window_secs).unwrap_or(i64::MAX);
    let mut by_entry: std::collections::BTreeMap<
        (i64, &str, usize),
        Vec<&portwarden_policy::Rule>,
    > = std::collections::BTreeMap::new();
    for r in &intent.rules {
        if let Some(t) = r.expires
            && t.unix().saturating_sub(now.unix()) <= window
        {
            by_entry
                .entry((t.unix(), &r.policy, r.entry))
                .or_default()
                .push(r);
        }
    }
    by_entry
        .into_iter()
        .map(|((t, policy, entry), rules)| {
            let mut ranges: Vec<portwarden_policy::PortRange> =
                rules.iter().map(|r| r.ports).collect();
            ranges.sort_by_key(|p| p.start);
            ranges.dedup();
            let ports: Vec<String> = ranges.iter().map(ToString::to_string).collect();
            Expiring {
                policy: policy.to_string(),
                entry,
                protocol: rules[0].protocol.as_str(),
                ports: ports.join(","),
                state: rules[0].state.as_str(),
                expires: portwarden_policy::Timestamp::from_unix(t).to_string(),
                in_seconds: t - now.unix(),
            }
        })
        .collect()
}

/// The `expires:` line of an entry that expires before the next refresh.
pub fn expiring_line(e: &Expiring) -> String {
    format!(
        "expires: policy {} entry {} ({}/{} {}) at {}, in {}: the kernel stops matching its rules then and the next entry decides; the next refresh removes them",
        e.policy,
        e.entry,
        e.ports,
        e.protocol,
        e.state,
        e.expires,
        portwarden_policy::expiry::human_span(e.in_seconds)
    )
}

/// Prints the entries that expire before the next refresh.
pub fn print_expiring(expiring: &[Expiring]) {
    for e in expiring {
        println!("{}", text::printable(&expiring_line(e)));
    }
}

/// Prints the forwarded managed ports: each is enforced on the forward path.
pub fn print_forwarded(forwarded: &[Managed]) {
    for m in forwarded {
        println!(
            "forwarded: {} (policy {} entry {}: {})",
            text::printable(&m.description),
            text::printable(&m.policy),
            m.entry,
            m.state
        );
    }
}

/// Prints conflicts, shadowing, look-alikes, kept chains and the other owners of the packet
/// path (foreign nftables tables, the other iptables backend), which matter to `plan`, `apply`
/// and `reset` alike. They quote foreign rules' text, so control characters are escaped
/// (`text::printable`).
pub fn print_findings(plan: &Plan, to_stderr: bool) {
    let print = |s: String| {
        let s = text::printable(&s);
        if to_stderr {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    for c in &plan.conflicts {
        print(format!("conflict: {c}"));
    }
    for s in &plan.shadowing {
        print(format!("shadowed: {s}"));
    }
    for l in &plan.lookalikes {
        print(format!("look-alike: {l}"));
    }
    for k in &plan.kept {
        print(format!("kept: {k}"));
    }
    for f in &plan.foreign_tables {
        print(format!("warning: another table decides: {f}"));
    }
    if let Some(why) = &plan.foreign_tables_unread {
        print(format!(
            "warning: native nftables tables (firewalld, kube-proxy, ...) {why}; a drop there \
             would still win over portwarden's accept"
        ));
    }
    if let Some(m) = &plan.mixed_backends {
        print(format!("warning: {m}"));
    }
}

/// The exposure section of `plan`'s table: an `exposure:` header and one line per change, or
/// `N rule changes, no change in exposure` when rules change but nothing a scanner sees; nothing
/// when converged. Rules the diff could not read follow as warnings.
pub fn exposure_lines(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    match plan.exposure.as_deref() {
        _ if plan.is_converged() => {}
        None => {}
        Some([]) => out.push(format!(
            "{} rule change{}, no change in exposure",
            plan.changes,
            if plan.changes == 1 { "" } else { "s" }
        )),
        Some(changes) => {
            out.push(
                "exposure (what a scanner will see change; unmanaged: left to the host's rules):"
                    .to_string(),
            );
            out.extend(changes.iter().map(|c| format!("  {c}")));
        }
    }
    out.extend(
        plan.exposure_unread
            .iter()
            .map(|u| format!("warning: exposure: {u}; left out of the exposure before the change")),
    );
    out
}

pub fn run(a: Args) -> Outcome {
    let mut r = a.intent.resolve()?;
    r.netfilter = r.netfilter.with_exposure(true);
    let plan = r.netfilter.plan(&r.intent, &r.failsafe)?;
    let forwarded = forwarded(&r.netfilter, &r.intent);
    let expiring = expiring(&r.intent, r.now, crate::cmd::agent::DEFAULT_REFRESH_SECS);
    match a.output {
        Format::Json => {
            let out = PlanOutput {
                node: &r.node,
                backend: r.netfilter.backend().as_str(),
                plan: &plan,
                forwarded: &forwarded,
                expiring: &expiring,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            let say = |line: String| println!("{}", text::printable(&line));
            say(format!(
                "node {} ({} policies, {} rules), backend {} ({})",
                r.node,
                r.intent.policies.len(),
                r.intent.rules.len(),
                r.netfilter.backend(),
                r.netfilter.detection().reason
            ));
            for d in &plan.delete {
                say(format!("- {d}"));
            }
            for a in &plan.add {
                say(format!("+ {a}"));
            }
            exposure_lines(&plan).into_iter().for_each(say);
            print_findings(&plan, false);
            print_forwarded(&forwarded);
            print_expiring(&expiring);
            let current = r.netfilter.backend();
            for b in plan.other_backends(current) {
                println!(
                    "portwarden's rules also live in the {b} backend: they will be removed \
                     (after the {current} backend's are written and confirmed)"
                );
            }
            if plan.is_converged() {
                println!("no changes: netfilter already says what the policies say");
            } else {
                println!(
                    "{} change(s) pending ({} to add, {} to delete); `portwarden apply` with the same arguments makes them",
                    plan.changes,
                    plan.add.len(),
                    plan.delete.len()
                );
            }
        }
    }
    // Rules of portwarden's may be where it could not look: not a plan to trust as complete.
    for u in &plan.unread {
        eprintln!(
            "error: could not read {}; portwarden's rules there, if any, are not in this plan",
            text::printable(&u.to_string())
        );
    }
    Ok(if !plan.unread.is_empty() {
        ExitCode::FAILURE
    } else if plan.is_converged() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
