//! The agent's HTTP endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`,
//! `/v1/inside` (the inside view, computed on request) and `/v1/report` (the last peer scan).
//! [`crate::server::serve`] serves it within connection limits.
//!
//! # Guarantees
//!
//! * `/healthz` is 200 while the loop is healthy ([`crate::agent::State::health`]), else 503
//!   with the reason.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::agent::Shared;
use crate::inside::INSIDE_PATH;

/// Inside views computed at once: each runs `iptables-save` and a plan (children, pipes, CPU),
/// so many clients asking together wait here (up to the request timeout) instead of taking
/// the descriptors and the CPU the reconcile loop needs.
static INSIDE_VIEWS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The router over the agent's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(INSIDE_PATH, get(inside))
        .route("/v1/report", get(report))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    match s.with_state(|st| st.health(std::time::Instant::now())) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let (ready, policy_error, apply_error) =
        s.with_state(|st| (st.ready, st.policy_error.clone(), st.apply_error.clone()));
    match (ready, apply_error, policy_error) {
        (true, None, _) => (StatusCode::OK, "ready\n").into_response(),
        (_, Some(e), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("apply failed: {e}\n"),
        )
            .into_response(),
        (false, None, Some(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no valid policy yet: {e}\n"),
        )
            .into_response(),
        (false, None, None) => {
            (StatusCode::SERVICE_UNAVAILABLE, "intent not applied yet\n").into_response()
        }
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
