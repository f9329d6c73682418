//! The agent's HTTP endpoint: `/` (the page of the last peer scan and the inside view, HTML;
//! [`crate::page`]), `/metrics` (Prometheus text), `/healthz`, `/readyz`, `/v1/inside` (the
//! inside view, computed on request) and `/v1/report` (the last peer scan).
//! [`crate::server::serve`] serves it within connection limits.
//!
//! # Guarantees
//!
//! * `/healthz` is 200 while the loop is healthy ([`crate::state::State::health`]), else 503
//!   with the reason.
//! * Any host can reach these endpoints, so `/readyz` and `/v1/inside` say what failed (the
//!   documents are invalid, an apply failed), never the loader's or iptables' words: those
//!   name paths, quote values and print rules, and go to the agent's log.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use portwarden_reconcile::inside::INSIDE_PATH;

use crate::state::Shared;

/// Inside views computed at once: each runs `iptables-save` and a plan (children, pipes, CPU),
/// so many clients asking together wait here (up to the request timeout) instead of taking
/// the descriptors and the CPU the reconcile loop needs.
static INSIDE_VIEWS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The router over the agent's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(INSIDE_PATH, get(inside))
        .route("/v1/report", get(report))
        .with_state(shared)
}

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A `/metrics` answer: `text`, a Prometheus text exposition, as [`OPENMETRICS`]. The
/// controller's `/metrics` answers with it too.
pub fn metrics_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    metrics_response(s.metrics.encode())
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    match s.with_state(|st| st.health(std::time::Instant::now())) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    // Any host can ask: say what is wrong, not the loader's or iptables' words (paths, quoted
    // values, rules); the log has those.
    let (ready, policy_invalid, apply_failed) = s.with_state(|st| {
        (
            st.ready,
            st.policy_error.is_some(),
            st.apply_error.is_some(),
        )
    });
    let not_ready =
        |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    match (ready, apply_failed, policy_invalid) {
        (true, false, _) => (StatusCode::OK, "ready\n").into_response(),
        (_, true, _) => not_ready("apply failed; the agent's log says why"),
        (false, false, true) => not_ready(
            "no valid policy yet: the policy documents are invalid or missing; the agent's log names the problems",
        ),
        (false, false, false) => not_ready("intent not applied yet"),
    }
}

async fn inside(State(s): State<Arc<Shared>>) -> Response {
    // The semaphore is never closed: this always holds a permit.
    let permit = INSIDE_VIEWS.acquire().await.ok();
    // Reading netfilter shells out to iptables-save: keep it off the async workers. The permit
    // goes with the work, so a request that timed out still counts until its view is done.
    match tokio::task::spawn_blocking(move || {
        let _permit = permit;
        s.inside_view()
    })
    .await
    {
        Ok(view) => Json(view).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("inside view failed: {e}\n"),
        )
            .into_response(),
    }
}

/// The page: the last peer scan and the inside view (computed as for `/v1/inside`, under the
/// same cap), as one HTML document that forbids scripts and fetches in its header too.
async fn page(State(s): State<Arc<Shared>>) -> Response {
    let permit = INSIDE_VIEWS.acquire().await.ok();
    let shared = Arc::clone(&s);
    let view = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        shared.inside_view()
    })
    .await
    .ok();
    let (report, notes) = s.with_state(|st| (st.report.clone(), st.notes.clone()));
    let text = crate::page::render(
        &s.config.node,
        s.config.scan_interval,
        report.as_ref(),
        view.as_ref(),
        &notes,
        portwarden_policy::Timestamp::now(),
    );
    html_response(text)
}

/// An HTML answer whose header forbids scripts and fetches as the page itself does.
fn html_response(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                portwarden_reconcile::html::CSP,
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

async fn report(State(s): State<Arc<Shared>>) -> Response {
    match s.with_state(|st| st.report.clone()) {
        Some(r) => Json(r).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no peer scan yet (is --scan-interval set?)\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Shared::new(crate::config::tests::config(
            "p".into(),
            "i".into(),
            "127.0.0.1:9750",
        ))
    }

    async fn body(r: Response) -> (StatusCode, String) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `/readyz` is served to any host: it says why the agent is not ready, but not the
    /// loader's or iptables' words (paths, quoted values, rule text); those are logged.
    #[tokio::test]
    async fn readyz_gives_a_reason_but_no_error_text() {
        let s = shared();
        s.set_intent(
            None,
            Some("/srv/policies/web.yaml:7:14: error: unknown state \"s3cret\"".into()),
        );
        let (status, text) = body(readyz(State(s.clone())).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.starts_with("no valid policy yet"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains("/srv"), "{text}");
        s.state.lock().unwrap().apply_error =
            Some("iptables-restore: line 3 failed: -A PORTWARDEN-INPUT -s 10.1.2.3".into());
        let (status, text) = body(readyz(State(s)).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.starts_with("apply failed"), "{text}");
        assert!(
            !text.contains("line 3") && !text.contains("10.1.2.3"),
            "{text}"
        );
    }

    /// `/` is HTML whose header forbids scripts and fetches too. (The page itself is
    /// `page`'s; the route is exercised on a lab node, where reading netfilter is harmless.)
    #[tokio::test]
    async fn the_page_is_html_that_runs_nothing() {
        let text = crate::page::render(
            "web-1",
            None,
            None,
            None,
            &portwarden_reconcile::html::EntryNotes::new(),
            portwarden_policy::Timestamp::from_unix(0),
        );
        let r = html_response(text);
        let headers = r.headers().clone();
        let (status, text) = body(r).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            portwarden_reconcile::html::CSP
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(text.starts_with("<!DOCTYPE html>"), "{text}");
    }
}
