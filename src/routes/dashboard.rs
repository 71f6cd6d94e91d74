//! `GET /pools/dashboard`: a live page of the pools, drawn from
//! `GET /pools/events`. Its HTML, script and styles are compiled in (it
//! works offline) and served with a Content-Security-Policy that lets the
//! page load and connect to its own origin only.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{Viewer, hidden, no_store};

/// The page's policy: its own script, styles and event stream; no other
/// origin, no inline code, no frames, no forms.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const HTML: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    no_store(response)
}

/// The answers of `GET /pools/dashboard`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description for the OpenAPI document, never built
enum DashboardAnswers {
    /// The page (`text/html`), with a Content-Security-Policy that allows
    /// its own origin only. Its script is `/pools/dashboard/dashboard.js`,
    /// its styles `/pools/dashboard/dashboard.css`.
    #[response(status = 200, content_type = "text/html")]
    Page(String),
    /// The health details policy hides the pools from this request.
    #[response(status = 403, content_type = "application/problem+json")]
    Hidden(crate::problem::ProblemDoc),
}

/// A live dashboard of the pools and the process, in the browser.
#[utoipa::path(get, path = "/pools/dashboard", responses(DashboardAnswers))]
pub(super) async fn page(Viewer(view): Viewer) -> Response {
    match view {
        Some(_) => asset("text/html; charset=utf-8", HTML),
        None => hidden(),
    }
}

/// The page's script.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The page's styles.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
