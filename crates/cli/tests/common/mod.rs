//! Helpers shared by several test files of the `portwarden` binary.

/// The value of the un-labelled Prometheus sample `name` in a metrics page.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
