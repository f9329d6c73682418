//! How the long-running commands — both agents and the controller — stop and retry: the one
//! [`shutdown_signal`] (SIGTERM and SIGINT stop, SIGHUP calls a hook) and the one [`backoff`]
//! between failed API writes.

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{error, info};

/// What [`shutdown_signal`] returns, boxed so it can be handed on by name.
pub type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Resolves on SIGTERM or SIGINT (logged); calls `on_hangup` on every SIGHUP, which no longer
/// terminates the process.
///
/// # Guarantees
///
/// The handlers are installed, and a task that watches them is started, when this function is
/// called — not when the future is first polled. So call it first thing: a SIGHUP during
/// start-up is handled too, and `on_hangup` runs at once even while the caller is busy
/// elsewhere (a controller waiting for the API server before it awaits the future).
///
/// # Caveats
///
/// Must be called inside a Tokio runtime with signals enabled (it panics otherwise, as
/// `tokio::signal` and `tokio::spawn` do). When a handler cannot be installed the error is
/// logged; without SIGTERM and SIGINT handlers the future never resolves (stop the process
/// with SIGKILL).
pub fn shutdown_signal<F>(mut on_hangup: F) -> impl Future<Output = ()> + Send + 'static
where
    F: FnMut() + Send + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    let hup = signal(SignalKind::hangup());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut hup = match hup {
            Ok(h) => Some(h),
            Err(e) => {
                error!(error = %e, "cannot install a SIGHUP handler; SIGHUP will terminate the process");
                None
            }
        };
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                error!(error = %e, "cannot install signal handlers; stop the process with SIGKILL");
                // Keeps `stop` alive: the shutdown future never resolves.
                let _stop = stop;
                return std::future::pending().await;
            }
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    info!("SIGTERM: shutting down");
                    break;
                }
                _ = int.recv() => {
                    info!("SIGINT: shutting down");
                    break;
                }
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => None,
                    }
                } => on_hangup(),
            }
        }
        let _ = stop.send(());
        // Still here for later SIGHUPs, while the process shuts down.
        while let Some(h) = hup.as_mut() {
            if h.recv().await.is_none() {
                break;
            }
            on_hangup();
        }
    });
    async move {
        // An error means the runtime is going away: shut down too.
        let _ = stopped.await;
    }
}

/// The retry delay after `failures` consecutive failures: 1 s, 2 s, 4 s, ... up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn sighup_calls_the_hook_and_does_not_stop() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = shutdown_signal(move || {
            let _ = tx.send(());
        });
        let pid = std::process::id().to_string();
        let waiting = tokio::spawn(shutdown);
        for _ in 0..2 {
            let kill = std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap();
            assert!(kill.success());
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("SIGHUP reached the hook")
                .unwrap();
        }
        assert!(!waiting.is_finished(), "SIGHUP must not stop the process");
        waiting.abort();
    }
}
