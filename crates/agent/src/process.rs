//! The process around an agent's loop, the same for both agents: the network namespace's agent
//! lock, the runtime, the signal handlers, the descriptor limit, the HTTP server, and the loop
//! on a thread of its own ([`run_agent`]).

use std::future::Future;
use std::sync::Arc;

use tracing::{error, info};

use crate::config::AgentConfig;
use crate::http::router;
use crate::lifecycle::{Shutdown, shutdown_signal};
use crate::server::{Limits, fit_descriptors, serve};
use crate::state::Shared;

/// The process around an agent's loop, for both agents (the standalone agent and
/// `portwarden-kube`'s `agent --kube`): takes the network namespace's agent lock, starts a
/// runtime, installs the signal handlers (`on_hangup` runs on every SIGHUP), binds the HTTP
/// endpoint, fits the descriptor limit ([`fit_descriptors`]), and starts `reconcile` on a
/// thread of its own. Then it serves HTTP ([`router`]) while `main` runs, with
/// the future that resolves on SIGTERM or SIGINT; when `main` returns the server stops and
/// the thread is joined (a panic of it is logged).
///
/// # Guarantees
///
/// The descriptor limit is fitted before `reconcile` starts, so every child it spawns
/// inherits the fitted limit.
///
/// # Caveats
///
/// `reconcile` must return once `main` has: `main` tells it (a stop message, or by dropping
/// the channel it waits on), or the process waits for it forever.
///
/// # Errors
///
/// The outer error: another agent manages this network namespace (named), the lock directory
/// cannot be used, the runtime or the thread cannot start, or the HTTP address cannot be
/// bound. The inner one is `main`'s.
pub fn run_agent<E, M, F>(
    config: AgentConfig,
    on_hangup: impl FnMut() + Send + 'static,
    reconcile: impl FnOnce(Arc<Shared>) + Send + 'static,
    main: M,
) -> std::io::Result<Result<(), E>>
where
    M: FnOnce(Arc<Shared>, Shutdown) -> F,
    F: Future<Output = Result<(), E>>,
{
    let _only_agent = take_agent_lock()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // First thing: from here on a SIGHUP calls `on_hangup` instead of ending the process.
        let shutdown: Shutdown = Box::pin(shutdown_signal(on_hangup));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
            })?;
        let budget = fit_descriptors(Limits::default());
        let shared = Shared::new(config);
        let loop_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || reconcile(loop_shared))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve(
            listener,
            router(shared.clone()),
            budget,
            shared.metrics.http.clone(),
            async {
                let _ = stopped.await;
            },
        );
        let main = async {
            let result = main(shared.clone(), shutdown).await;
            let _ = stop.send(());
            result
        };
        let ((), result) = tokio::join!(server, main);
        if worker.join().is_err() {
            error!("reconcile loop panicked");
        }
        Ok(result)
    })
}

/// The agent lock of this network namespace, held for the agent's life: a second agent here
/// would undo this one's rules at every refresh, so it refuses to start
/// ([`portwarden_netfilter::writer::Lock::agent`]). Also the Kubernetes agent's.
///
/// # Errors
/// The lock's error (naming the running agent), as an I/O error.
pub fn take_agent_lock() -> std::io::Result<portwarden_netfilter::writer::Lock> {
    let lock = portwarden_netfilter::writer::Lock::agent(&portwarden_netfilter::writer::lock_dir())
        .map_err(std::io::Error::other)?;
    info!(lock = %lock.path().display(), "agent lock held: the only agent of this network namespace");
    Ok(lock)
}
