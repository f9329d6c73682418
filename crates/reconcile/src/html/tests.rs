use super::*;
use crate::report::Row;

const POLICY: &str = r#"
apiVersion: portwarden.io/v1alpha1
kind: PortPolicy
metadata:
  name: quarantine
spec:
  priority: 100
  ports:
    - ports: "8080"
      state: closed
      reason: "<script>alert(1)</script>"
    - ports: "80"
      state: closed
      from: ["172.16.7.80/32"]
      expires: "2030-01-01T00:00:00Z"
"#;

fn row(node: &str, port: u16, verdict: Verdict, observed: &str) -> Row {
    Row {
        node: node.into(),
        address: "10.213.0.11".parse().unwrap(),
        port,
        protocol: "tcp".into(),
        from: "10.213.1.2".parse().unwrap(),
        expected: "closed".into(),
        observed: observed.into(),
        verdict,
        cause: (verdict != Verdict::InSync).then(|| "probes are dropped".to_string()),
        policy: Some("quarantine".into()),
        entry: Some(0),
        confirmed_at: None,
    }
}

fn notes() -> EntryNotes {
    let loaded = portwarden_policy::load_source("q.yaml", POLICY.as_bytes()).unwrap();
    entry_notes(&loaded.policies)
}

fn page_of(report: &Report, entries: &EntryNotes) -> String {
    render(&Page {
        report,
        generated_at: "2026-12-01T12:51:56Z",
        version: VERSION,
        title: "portwarden verify",
        entries,
        refresh_secs: None,
        inside: None,
    })
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let from = s.find(start).unwrap_or_else(|| panic!("no {start} in {s}"));
    let rest = &s[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

#[test]
fn entry_notes_say_what_explain_says() {
    let n = notes();
    let first = &n[&("quarantine".to_string(), 0)];
    assert_eq!(first.reason.as_deref(), Some("<script>alert(1)</script>"));
    assert_eq!((first.priority, first.from.as_str()), (100, "any"));
    assert_eq!(
        (first.ports.as_str(), first.state.as_str()),
        ("8080", "closed")
    );
    let second = &n[&("quarantine".to_string(), 1)];
    assert_eq!(second.from, "172.16.7.80/32");
    assert_eq!(second.expires.as_deref(), Some("2030-01-01T00:00:00Z"));
    assert_eq!(second.reason, None);
}

#[test]
fn strings_from_policies_inventories_and_the_network_are_escaped() {
    let mut r = vec![row("<b>web-1</b>", 8080, Verdict::Drift, "filtered")];
    r[0].cause = Some("agent said \"<img src=x onerror=alert(2)>\" & 'more'".into());
    r[0].observed = "<i>open</i>".into();
    r.push(Row {
        expected: "unlisted".into(),
        cause: Some("<svg onload=alert(3)>".into()),
        ..row("<b>web-1</b>", 31337, Verdict::Drift, "open")
    });
    let report = Report::new(r, vec!["note \u{202e}<u>x</u>".into()]);
    let html = page_of(&report, &notes());
    assert!(
        html.contains("reason: &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;web-1&lt;/b&gt;"));
    assert!(html.contains(
        "agent said &quot;&lt;img src=x onerror=alert(2)&gt;&quot; &amp; &#39;more&#39;"
    ));
    assert!(html.contains("&lt;i&gt;open&lt;/i&gt;"));
    assert!(html.contains("&lt;svg onload=alert(3)&gt;"));
    // The bidirectional override is shown, not obeyed.
    assert!(
        html.contains("note \\u{202e}&lt;u&gt;x&lt;/u&gt;"),
        "{html}"
    );
    for tag in ["<script", "<b>", "<img", "<i>", "<u>", "<svg onload"] {
        assert!(!html.contains(tag), "{tag} unescaped");
    }
    assert!(!html.contains('\u{202e}'));
}

#[test]
fn the_page_is_self_contained() {
    let report = Report::new(vec![row("web-1", 8080, Verdict::Drift, "filtered")], vec![]);
    let html = page_of(&report, &notes());
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
    for fetch in [
        "<script", "src=", "url(", "@import", "<link", "http:", "https:",
    ] {
        assert!(!html.contains(fetch), "{fetch} in the page");
    }
    // Every link is to a place in the page.
    assert!(
        html.match_indices("href=\"")
            .all(|(i, _)| html[i + 6..].starts_with('#'))
    );
    assert!(
        html.contains("content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"")
    );
    assert!(!html.contains("http-equiv=\"refresh\""));
}

#[test]
fn rendering_is_deterministic_and_says_when_and_which_version() {
    let report = Report::new(vec![row("web-1", 8080, Verdict::Drift, "filtered")], vec![]);
    let entries = notes();
    assert_eq!(page_of(&report, &entries), page_of(&report, &entries));
    let html = page_of(&report, &entries);
    assert!(html.contains("<dd id=\"when\">2026-12-01T12:51:56Z</dd>"));
    assert!(html.contains(&format!("<dd id=\"version\">{VERSION}</dd>")));
    assert!(html.contains("<dd id=\"vantages\">10.213.1.2</dd>"));
    let refreshing = render(&Page {
        refresh_secs: Some(30),
        inside: None,
        ..Page {
            report: &report,
            generated_at: "x",
            version: "y",
            title: "t",
            entries: &entries,
            refresh_secs: None,
            inside: None,
        }
    });
    assert!(refreshing.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
}

#[test]
fn summary_counts_nodes_ports_and_verdicts() {
    let report = Report::new(
        vec![
            row("web-1", 80, Verdict::InSync, "closed"),
            row("web-1", 8080, Verdict::Drift, "filtered"),
            row("db-1", 22, Verdict::Indeterminate, "unfiltered"),
        ],
        vec![],
    );
    let html = page_of(&report, &notes());
    for (id, n) in [
        ("nodes", 2),
        ("ports", 3),
        ("in_sync", 1),
        ("drift", 1),
        ("indeterminate", 1),
    ] {
        assert!(
            html.contains(&format!("<dd id=\"count-{id}\">{n}</dd>")),
            "{id}"
        );
    }
    assert!(html.contains("data-verdict=\"drift\">Drift</p>"));
}

#[test]
fn drift_comes_first_among_nodes_and_ports() {
    let report = Report::new(
        vec![
            row("a-calm", 22, Verdict::InSync, "closed"),
            row("m-unsure", 22, Verdict::Indeterminate, "unfiltered"),
            row("z-drifted", 22, Verdict::InSync, "closed"),
            row("z-drifted", 9000, Verdict::Drift, "filtered"),
        ],
        vec![],
    );
    let html = page_of(&report, &notes());
    let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("no {s}"));
    let (z, m, a) = (
        at("data-node=\"z-drifted\""),
        at("data-node=\"m-unsure\""),
        at("data-node=\"a-calm\""),
    );
    assert!(
        z < m && m < a,
        "nodes in the order drift, indeterminate, in sync"
    );
    let matrix = between(&html[z..], "<table class=\"matrix\">", "</table>");
    assert!(
        matrix.find("9000/tcp").unwrap() < matrix.find("22/tcp").unwrap(),
        "{matrix}"
    );
}

#[test]
fn consecutive_ports_alike_collapse_into_ranges() {
    let mut rows: Vec<Row> = (8000..=8100)
        .map(|p| row("web-1", p, Verdict::InSync, "closed"))
        .collect();
    rows[50] = row("web-1", 8050, Verdict::Drift, "filtered");
    rows.push(row("web-1", 9000, Verdict::InSync, "closed"));
    let report = Report::new(rows, vec![]);
    let html = page_of(&report, &notes());
    let matrix = between(&html, "<table class=\"matrix\">", "</table>");
    let labels: Vec<&str> = matrix
        .split("<th class=\"port\">")
        .skip(1)
        .map(|s| &s[..s.find('<').unwrap()])
        .collect();
    assert_eq!(
        labels,
        ["8050/tcp", "8000-8049/tcp", "8051-8100/tcp", "9000/tcp"]
    );
    // Drift on a run of ports is one line of the details, its ports as a range.
    let mut rows: Vec<Row> = (10..=12)
        .map(|p| row("web-1", p, Verdict::Drift, "open"))
        .collect();
    rows.push(row("web-1", 14, Verdict::Drift, "open"));
    let html = page_of(&Report::new(rows, vec![]), &notes());
    let details = between(&html, "<table class=\"details\">", "</table>");
    assert_eq!(
        details.matches("<tr class=\"finding\"").count(),
        2,
        "{details}"
    );
    assert!(details.contains("<th class=\"port\">10-12/tcp</th>"));
}

#[test]
fn each_verdict_has_its_colour_symbol_and_words() {
    let report = Report::new(
        vec![
            row("web-1", 1, Verdict::InSync, "closed"),
            row("web-1", 3, Verdict::Drift, "filtered"),
            row("web-1", 5, Verdict::Indeterminate, "unfiltered"),
        ],
        vec![],
    );
    let html = page_of(&report, &notes());
    let looks = [Verdict::InSync, Verdict::Drift, Verdict::Indeterminate].map(look);
    for (l, observed) in looks.iter().zip(["closed", "filtered", "unfiltered"]) {
        assert!(html.contains(&format!(".{} {{ background: {}; }}", l.class, l.colour)));
        let cell = format!(
            "<td class=\"{}\" title=\"{}: expected closed, observed {observed}\"><span class=\"sym\" role=\"img\" aria-label=\"{}\">{}</span>{observed}",
            l.class, l.word, l.word, l.symbol
        );
        assert!(html.contains(&cell), "{cell}");
    }
    let distinct = |f: fn(&Look) -> &str| looks.iter().map(f).collect::<BTreeSet<_>>().len();
    assert_eq!(distinct(|l| l.colour), 3);
    assert_eq!(distinct(|l| l.symbol), 3);
}

#[test]
fn drift_and_indeterminate_rows_say_expected_observed_cause_and_entry() {
    let mut unsure = row("web-1", 80, Verdict::Indeterminate, "unfiltered");
    unsure.entry = Some(1);
    unsure.cause = Some("an ACK scan cannot tell".into());
    let mut unmanaged = row("web-1", 81, Verdict::Indeterminate, "not scanned");
    unmanaged.expected = "-".into();
    unmanaged.policy = None;
    unmanaged.entry = None;
    let report = Report::new(
        vec![
            row("web-1", 8080, Verdict::Drift, "filtered"),
            unsure,
            unmanaged,
        ],
        vec![],
    );
    let html = page_of(&report, &notes());
    let details = between(&html, "<table class=\"details\">", "</table>");
    let lines: Vec<&str> = details.split("<tr class=\"finding\"").skip(1).collect();
    assert_eq!(lines.len(), 3, "{details}");
    assert!(
        lines[0].contains("8080/tcp")
            && lines[0].contains("drift</td><td>closed</td><td>filtered</td>")
    );
    assert!(lines[0].contains("probes are dropped"));
    assert!(lines[0].contains(
        "policy <code>quarantine</code>, entry 0: closed 8080/tcp from any (priority 100)"
    ));
    assert!(lines[1].contains("80/tcp") && lines[1].contains("an ACK scan cannot tell"));
    assert!(lines[1].contains(
        "entry 1: closed 80/tcp from 172.16.7.80/32 (priority 100), expires 2030-01-01T00:00:00Z"
    ));
    assert!(lines[1].contains("no reason given"));
    assert!(lines[2].contains("no policy entry decides this port"));
}

#[test]
fn unlisted_open_ports_have_their_own_section() {
    let quiet = Report::new(vec![row("web-1", 22, Verdict::InSync, "closed")], vec![]);
    assert!(page_of(&quiet, &notes()).contains(
        "<section id=\"unlisted\">\n<h2>Open ports no policy declares</h2>\n<p>None found."
    ));
    let mut backdoor = row("web-1", 31337, Verdict::Drift, "open");
    backdoor.expected = "unlisted".into();
    backdoor.policy = None;
    backdoor.entry = None;
    backdoor.cause = Some("open port that no policy declares (unlisted: report)".into());
    let report = Report::new(
        vec![row("web-1", 22, Verdict::InSync, "closed"), backdoor],
        vec![],
    );
    let html = page_of(&report, &notes());
    let section = between(&html, "<section id=\"unlisted\">", "</section>");
    assert!(
        section.contains("<th class=\"port\">31337/tcp</th>")
            && section.contains("open port that no policy declares")
    );
    let node = between(&html, "<section class=\"node\"", "</section>");
    assert!(
        !node.contains("31337"),
        "an unlisted port is not a managed one: {node}"
    );
}

#[test]
fn an_empty_report_renders() {
    let html = page_of(&Report::default(), &EntryNotes::new());
    assert!(html.contains("<dd id=\"count-nodes\">0</dd>") && html.contains("In sync"));
}

#[test]
fn an_agents_inside_view_is_shown_escaped() {
    use crate::inside::{InsideView, ShadowView};
    use crate::listeners::Listener;
    let view = InsideView {
        node: "web-1".into(),
        converged: false,
        pending_changes: 3,
        shadowing: vec![ShadowView {
            family: "ipv4".into(),
            chain: "INPUT".into(),
            position: 1,
            rule: "-A INPUT -m comment --comment \"<script>x</script>\" -j DROP".into(),
            entries: vec![("quarantine".into(), 0)],
        }],
        listeners: vec![Listener {
            protocol: portwarden_policy::Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port: 8080,
        }],
        mixed_backends: Some("iptables-legacy also holds rules <b>".into()),
        policy_invalid: true,
        ..InsideView::default()
    };
    let report = Report::new(vec![row("web-2", 22, Verdict::InSync, "closed")], vec![]);
    let entries = notes();
    let html = render(&Page {
        inside: Some(&view),
        ..Page {
            report: &report,
            generated_at: "t",
            version: "v",
            title: "portwarden agent on web-1",
            entries: &entries,
            refresh_secs: Some(30),
            inside: None,
        }
    });
    let section = between(&html, "<section id=\"inside\">", "</section>");
    assert!(
        section.contains("<h2>Inside view of web-1</h2>"),
        "{section}"
    );
    assert!(section.contains("not in place: 3 changes pending"));
    assert!(section.contains("the policy documents are invalid"));
    assert!(section.contains("the last apply succeeded"));
    assert!(section.contains("iptables-legacy also holds rules &lt;b&gt;"));
    assert!(section.contains(
        "ipv4 INPUT#1 (-m comment --comment &quot;&lt;script&gt;x&lt;/script&gt;&quot; -j DROP): a foreign rule decides first for <code>quarantine</code> entry 0"
    ));
    assert!(section.contains("<th class=\"port\">8080/tcp</th><td>0.0.0.0</td>"));
    assert!(!html.contains("<script") && !html.contains("<b>"));
    // After the summary, before the nodes.
    assert!(html.find("id=\"summary\"") < html.find("id=\"inside\""));
    assert!(html.find("id=\"inside\"") < html.find("class=\"node\""));
}

#[test]
fn rows_without_a_route_have_no_vantage() {
    let mut lost = row("far-1", 22, Verdict::Indeterminate, "not scanned");
    lost.from = "0.0.0.0".parse().unwrap();
    lost.cause = Some("unreachable: no route to 10.9.9.9".into());
    let report = Report::new(
        vec![lost, row("web-1", 22, Verdict::InSync, "closed")],
        vec![],
    );
    let html = page_of(&report, &notes());
    assert!(
        html.contains("<dd id=\"vantages\">10.213.1.2</dd>"),
        "{html}"
    );
    assert!(html.contains("<th>no route: no source</th>"));
    assert!(!html.contains("from 0.0.0.0"));
}
