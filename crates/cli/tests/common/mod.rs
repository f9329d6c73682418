//! Helpers shared by several test files of the `portwarden` binary.

#[allow(dead_code)] // not every test file uses every helper
/// The value of the un-labelled Prometheus sample `name` in a metrics page.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Runs `bin ARGS` (the portwarden binary) in `ns` with stderr to a pipe until a stderr line satisfies `done`
/// (or `bound` passes), then kills it; returns everything it wrote to stderr.
#[allow(dead_code)] // not every test file uses every helper
pub fn stderr_until(
    bin: &str,
    ns: &portwarden_lab::Netns,
    args: &[&str],
    bound: std::time::Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    use std::io::BufRead;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, bin])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ip netns exec");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { return };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    let until = std::time::Instant::now() + bound;
    let mut seen = String::new();
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if done(&line) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}
