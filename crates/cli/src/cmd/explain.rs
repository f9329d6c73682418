//! `portwarden explain`: which policy entry decides a port for a source on a node, and why.
//! Evaluates the same precedence model the rules are compiled from, and (where it may read
//! them: as root in the node's network namespace) what the native nftables tables of other
//! owners — firewalld, kube-proxy, hand-written ones — decide for the same packet: a drop
//! there wins over portwarden's accept.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use portwarden_policy::{Loaded, Protocol, Rule, State, Timestamp, text};
use serde::Serialize;

use crate::Outcome;
use crate::args::{Format, PolicyArgs, ResolvedNode};

/// Arguments of `explain`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  portwarden explain -f examples/quarantine --inventory examples/inventory.yaml \\\n      --node web-1 --port 80/tcp --from 172.16.7.80 -o json"
)]
pub struct Args {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The port, as PORT or PORT/PROTO (tcp or udp; default tcp).
    #[arg(long, value_name = "PORT[/PROTO]", value_parser = parse_port_proto)]
    port: (u16, Protocol),
    /// The source address of the probe or client.
    #[arg(long = "from", value_name = "ADDRESS")]
    from: IpAddr,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
}

fn parse_port_proto(s: &str) -> Result<(u16, Protocol), String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(format!(
                "unknown protocol \"{other}\" (expected tcp or udp)"
            ));
        }
    };
    let port = portwarden_policy::ports::parse_port(port).map_err(|e| e.to_string())?;
    Ok((port, protocol))
}

/// The JSON shape of docs/cli.md, plus the details a person wants.
#[derive(Serialize)]
struct Explanation {
    node: String,
    port: u16,
    protocol: &'static str,
    from: IpAddr,
    state: Option<&'static str>,
    policy: Option<String>,
    entry: Option<usize>,
    managed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// When the deciding entry stops applying (RFC 3339, UTC), and in how many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    overrides: Vec<Overridden>,
    /// Entries that would match but have expired: no longer applied.
    expired: Vec<Expired>,
    /// Foreign nftables base chains that drop, reject or may decide this packet.
    foreign_tables: Vec<ForeignExplained>,
    /// The DNAT rules that forward this port to a container or pod (read where `explain` may:
    /// with CAP_NET_ADMIN in the node's network namespace).
    forwarded: Vec<String>,
    /// Why they could not be read, when they could not.
    foreign_tables_unread: Option<String>,
}

#[derive(Serialize)]
struct ForeignExplained {
    #[serde(flatten)]
    decision: portwarden_netfilter::ForeignDecision,
    /// What it does beside the winning entry's state (none when the port is not managed).
    effect: Option<portwarden_netfilter::foreign_nft::Effect>,
    message: String,
}

/// Why the foreign tables were not read by an `explain` without CAP_NET_ADMIN (which needs
/// none for the policy part: the table output stays quiet about it).
const NOT_PRIVILEGED: &str =
    "not read: reading nftables needs root (CAP_NET_ADMIN) in the node's network namespace";

/// What the foreign nftables tables of this network namespace decide for the packet (drops,
/// rejects and unknowns; accepts end only their own chain), or why they cannot be read.
fn foreign(
    port: u16,
    protocol: Protocol,
    from: IpAddr,
    state: Option<State>,
) -> (Vec<ForeignExplained>, Option<String>) {
    use portwarden_netfilter::foreign_nft::{self, ForeignRead, Packet};
    if crate::caps::has(crate::caps::Cap::NetAdmin) != Some(true) {
        return (Vec::new(), Some(NOT_PRIVILEGED.into()));
    }
    let nft = portwarden_netfilter::backend::find_program("nft", None);
    let tables = match foreign_nft::read(nft.as_deref()) {
        ForeignRead::Read(t) => t,
        ForeignRead::NotRead(why) => return (Vec::new(), Some(why)),
    };
    let packet = Packet {
        family: match from {
            IpAddr::V4(_) => portwarden_netfilter::Family::Ipv4,
            IpAddr::V6(_) => portwarden_netfilter::Family::Ipv6,
        },
        protocol,
        port,
        source: Some(from.into()),
        destination: None,
    };
    let found = tables
        .decide(&packet)
        .into_iter()
        .filter(|d| !d.verdict.accepts())
        .map(|d| ForeignExplained {
            effect: state.and_then(|s| d.effect(s, protocol)),
            message: state.map_or_else(|| d.summary(), |s| d.describe(s, protocol)),
            decision: d,
        })
        .collect();
    (found, None)
}

/// How this namespace's `nat` table forwards the port, as [`Forward::describe`] says it
/// (read only with CAP_NET_ADMIN, like the foreign tables; nothing otherwise).
///
/// [`Forward::describe`]: portwarden_netfilter::forwarding::Forward::describe
fn forwarded(port: u16, protocol: Protocol, from: IpAddr) -> Vec<String> {
    if crate::caps::has(crate::caps::Cap::NetAdmin) != Some(true) {
        return Vec::new();
    }
    let Ok(nf) = portwarden_netfilter::Netfilter::detect(&portwarden_netfilter::Options::default())
    else {
        return Vec::new();
    };
    let family = match from {
        IpAddr::V4(_) => portwarden_netfilter::Family::Ipv4,
        IpAddr::V6(_) => portwarden_netfilter::Family::Ipv6,
    };
    nf.forwards()
        .unwrap_or_default()
        .iter()
        .filter(|f| f.family == family && f.covers(protocol, port))
        .map(|f| f.describe(protocol, port))
        .collect()
}

/// A policy entry that matches the packet, as `explain` names it.
#[derive(Serialize)]
struct Candidate {
    policy: String,
    entry: usize,
    state: &'static str,
    priority: u32,
    source: String,
    ports: String,
}

impl Candidate {
    fn of(r: &Rule) -> Candidate {
        Candidate {
            policy: r.policy.to_string(),
            entry: r.entry,
            state: r.state.as_str(),
            priority: r.priority,
            source: source_text(r),
            ports: r.ports.to_string(),
        }
    }
}

#[derive(Serialize)]
struct Overridden {
    #[serde(flatten)]
    of: Candidate,
    /// When it stops applying (RFC 3339, UTC); absent for a permanent entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    /// Seconds until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_seconds: Option<i64>,
}

/// An entry that would match the packet but has expired: as if deleted.
#[derive(Serialize)]
struct Expired {
    #[serde(flatten)]
    of: Candidate,
    /// When it stopped applying (RFC 3339, UTC).
    expired: String,
    /// Seconds since then.
    seconds_ago: i64,
}

fn source_text(r: &Rule) -> String {
    r.source
        .map_or_else(|| "any".to_string(), |n| n.to_string())
}

/// The entries that would match the packet but have expired by `now`, in precedence order.
fn expired_entries(
    loaded: &Loaded,
    node: &ResolvedNode,
    (port, protocol): (u16, Protocol),
    from: IpAddr,
    now: Timestamp,
) -> Vec<Expired> {
    loaded
        .policies
        .candidates(&node.labels, protocol, port, from, None)
        .into_iter()
        .filter_map(|r| {
            let t = r.expires.filter(|t| t.expired_at(now))?;
            Some(Expired {
                of: Candidate::of(&r),
                expired: t.to_string(),
                seconds_ago: now.unix() - t.unix(),
            })
        })
        .collect()
}

pub fn run(a: Args) -> Outcome {
    let (loaded, node) = a.policy.load()?;
    let (port, protocol) = a.port;
    if loaded.policies.policies().is_empty() {
        bail!("no PortPolicy documents in the -f paths");
    }
    let now = Timestamp::now();
    let expired = expired_entries(&loaded, &node, a.port, a.from, now);
    let mut candidates = loaded
        .policies
        .candidates(&node.labels, protocol, port, a.from, Some(now))
        .into_iter();
    let winner = candidates.next();
    let reason = winner
        .as_ref()
        .and_then(|r| loaded.policies.entry(r))
        .and_then(|e| e.reason.clone());
    let (foreign_tables, foreign_tables_unread) =
        foreign(port, protocol, a.from, winner.as_ref().map(|r| r.state));
    let e = Explanation {
        node: node.name.clone(),
        port,
        protocol: protocol.as_str(),
        from: a.from,
        state: winner.as_ref().map(|r| r.state.as_str()),
        policy: winner.as_ref().map(|r| r.policy.to_string()),
        entry: winner.as_ref().map(|r| r.entry),
        managed: winner.is_some(),
        priority: winner.as_ref().map(|r| r.priority),
        source: winner.as_ref().map(source_text),
        expires: winner
            .as_ref()
            .and_then(|r| r.expires)
            .map(|t| t.to_string()),
        expires_in_seconds: winner
            .as_ref()
            .and_then(|r| r.expires)
            .map(|t| t.unix() - now.unix()),
        reason,
        overrides: candidates
            .map(|r| Overridden {
                of: Candidate::of(&r),
                expires: r.expires.map(|t| t.to_string()),
                expires_in_seconds: r.expires.map(|t| t.unix() - now.unix()),
            })
            .collect(),
        expired,
        foreign_tables,
        forwarded: forwarded(port, protocol, a.from),
        foreign_tables_unread,
    };
    match a.output {
        Format::Json => {
            let text = serde_json::to_string_pretty(&e).context("cannot encode JSON")?;
            println!("{text}");
        }
        Format::Table => print_table(&e),
    }
    Ok(ExitCode::SUCCESS)
}

/// The table for people. Names and reasons come from policy files, so every line is printed
/// with its control characters escaped (`text::printable`); JSON needs no such care.
fn print_table(e: &Explanation) {
    let say = |line: String| println!("{}", text::printable(&line));
    let what = format!("{}/{} on {} from {}", e.port, e.protocol, e.node, e.from);
    match (&e.state, &e.policy, e.entry) {
        (Some(state), Some(policy), Some(entry)) => {
            say(format!("{what}: {state}"));
            say(format!(
                "  decided by policy {policy}, entry {entry} (priority {}, source {})",
                e.priority.unwrap_or_default(),
                e.source.as_deref().unwrap_or("any")
            ));
            if let (Some(t), Some(secs)) = (&e.expires, e.expires_in_seconds) {
                say(format!(
                    "  expires in {} ({t}); the next entry decides then",
                    portwarden_policy::expiry::human_span(secs)
                ));
            }
            if let Some(r) = &e.reason {
                say(format!("  reason: {r}"));
            }
            for o in &e.overrides {
                let until = match (&o.expires, o.expires_in_seconds) {
                    (Some(t), Some(secs)) => format!(
                        ", expires in {} ({t})",
                        portwarden_policy::expiry::human_span(secs)
                    ),
                    _ => String::new(),
                };
                say(format!(
                    "  overrides {}, entry {}: {} (priority {}, source {}, ports {}{until})",
                    o.of.policy, o.of.entry, o.of.state, o.of.priority, o.of.source, o.of.ports
                ));
            }
        }
        _ => {
            say(format!("{what}: not managed"));
            say(format!(
                "  no policy selecting {} covers this port for this source; portwarden leaves it alone",
                e.node
            ));
        }
    }
    for x in &e.expired {
        say(format!(
            "  {}, entry {}: {} (priority {}, source {}, ports {}) expired {} ago ({}), no longer applied",
            x.of.policy,
            x.of.entry,
            x.of.state,
            x.of.priority,
            x.of.source,
            x.of.ports,
            portwarden_policy::expiry::human_span(x.seconds_ago),
            x.expired
        ));
    }
    for f in &e.forwarded {
        say(format!("  forwarded: {f}"));
    }
    for f in &e.foreign_tables {
        say(format!("  warning: another table decides: {}", f.message));
    }
    if let Some(why) = e
        .foreign_tables_unread
        .as_ref()
        .filter(|w| *w != NOT_PRIVILEGED)
    {
        say(format!(
            "  native nftables tables (firewalld, kube-proxy, ...) {why}"
        ));
    }
}
