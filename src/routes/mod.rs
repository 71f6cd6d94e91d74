//! The pools router: health and stats of every pool over HTTP.
//!
//! | route | answers |
//! |---|---|
//! | `GET /pools/health` | [`HealthReport`](crate::HealthReport) as `application/health+json` (IETF draft: `status`, `checks`); 200 for pass or warn, 503 when a required pool fails |
//! | `GET /pools/health/{name}` | [`PoolHealth`] JSON (200/503), 404 problem+json for an unknown name |
//! | `GET /pools/stats` | `{"pools": [StatsSnapshot, ..]}` |
//! | `GET /pools/stats/{name}` | [`StatsSnapshot`], 404 problem+json for an unknown name |
//! | `GET /pools/health/live` | 200 `{"status":"pass"}` while the process and manager run; checks no dependency |
//! | `GET /pools/health/ready` | 200 when every pool passes or warns and the manager is not draining; 503 otherwise |
//! | `GET /pools/metrics` | Prometheus text format; see [`metrics`] |
//! | `GET /pools/openapi.json` | the OpenAPI 3.1 document of these routes ([`openapi::PoolsApi`]) |
//! | `GET /pools/docs` | Swagger UI for it, served from compiled-in assets (works offline) |
//! | `GET /pools/events` | Server-Sent Events: a snapshot of every pool's stats and health and the process figures each second |
//! | `GET /pools/dashboard` | a live page of the pools drawn from `/pools/events`, its assets compiled in, same-origin only (CSP) |
//!
//! Health answers come from the cache the periodic checks fill, so polling
//! them costs the database nothing. Every answer has `Cache-Control: no-store`.
//! The events and the dashboard follow the health routes' [`HealthDetails`]:
//! a request it shows nothing gets 403 problem+json; one it shows a summary
//! sees no driver's words and, of the servers' facts, only `tls`.
//!
//! ```no_run
//! # fn demo(manager: axum_pools::PoolManager) {
//! let app: axum::Router = axum::Router::new().merge(manager.router());
//! # }
//! ```

mod dashboard;
mod events;
mod health;
pub mod metrics;
pub mod openapi;
mod process;
mod stats;

use axum::{
    Router,
    handler::Handler,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};

use axum::extract::FromRef;
use utoipa::OpenApi as _;

use axum::http::request::Parts;

use crate::{
    error::PoolError,
    health::{HealthDetails, PoolHealth},
    manager::PoolManager,
    problem::Problem,
    stats::StatsSnapshot,
};

/// The pools router's state.
#[derive(Clone)]
struct RouterState {
    manager: PoolManager,
    details: HealthDetails,
}

impl FromRef<RouterState> for PoolManager {
    fn from_ref(state: &RouterState) -> Self {
        state.manager.clone()
    }
}

impl PoolManager {
    /// The pools router (see the [`routes` module docs](crate::routes)):
    /// merge it into the application's router. Its health routes show
    /// [`HealthDetails::Summary`]: statuses and figures, no driver's words;
    /// see [`router_with`](Self::router_with) to open them up.
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// let app: axum::Router = axum::Router::new().merge(manager.router());
    /// # }
    /// ```
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.router_with(HealthDetails::default())
    }

    /// [`router`](Self::router) with a policy for how much the health
    /// routes tell.
    ///
    /// ```no_run
    /// use axum_pools::HealthDetails;
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// let app: axum::Router = axum::Router::new().merge(manager.router_with(HealthDetails::Never));
    /// # }
    /// ```
    pub fn router_with<S>(&self, details: HealthDetails) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/pools/health", only_get(health::all))
            .route("/pools/health/{name}", only_get(health::one))
            .route("/pools/stats", only_get(stats::all))
            .route("/pools/stats/{name}", only_get(stats::one))
            .route("/pools/metrics", only_get(metrics::metrics))
            .route("/pools/health/live", only_get(health::live))
            .route("/pools/health/ready", only_get(health::ready))
            .route("/pools/events", only_get(events::events))
            .route("/pools/dashboard", only_get(dashboard::page))
            .route("/pools/dashboard/dashboard.js", only_get(dashboard::script))
            .route("/pools/dashboard/dashboard.css", only_get(dashboard::style))
            .with_state(RouterState {
                manager: self.clone(),
                details,
            })
            .merge(
                utoipa_swagger_ui::SwaggerUi::new("/pools/docs")
                    .url("/pools/openapi.json", openapi::PoolsApi::openapi()),
            )
    }
}

/// `GET` (and `HEAD`) to `handler`; any other method 405 problem+json with
/// `Allow`, not axum's empty 405.
fn only_get<H, T>(handler: H) -> MethodRouter<RouterState>
where
    H: Handler<T, RouterState>,
    T: 'static,
{
    get(handler).fallback(not_allowed)
}

async fn not_allowed() -> Response {
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route answers GET only".to_owned(),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The `{name}` segment of the per-pool routes.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct PoolName {
    /// The pool's name.
    name: String,
}

/// What a per-pool route (`/pools/{health,stats}/{name}`) works with: the
/// manager, what the request may see, and the `{name}` segment. A segment
/// axum cannot read (not UTF-8, say) is answered with problem+json too,
/// like every other answer of these routes.
struct PerPool {
    manager: PoolManager,
    view: Option<View>,
    name: String,
}

impl PerPool {
    /// `found`, or the 404 problem for a name no pool has.
    fn answer<T>(self, found: Option<T>, ok: impl FnOnce(T) -> Response) -> Response {
        match found {
            Some(found) => ok(found),
            None => unknown_pool(&self.manager, self.name),
        }
    }
}

impl axum::extract::FromRequestParts<RouterState> for PerPool {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &RouterState) -> Result<Self, Response> {
        use axum::{extract::Path, response::IntoResponse as _};
        let view = View::of(&state.details, parts);
        match Path::<PoolName>::from_request_parts(parts, state).await {
            Ok(Path(PoolName { name })) => Ok(Self {
                manager: state.manager.clone(),
                view,
                name,
            }),
            Err(rejection) => Err(no_store(
                Problem::new(
                    rejection.status(),
                    "invalid-path",
                    "Invalid path",
                    rejection.body_text(),
                )
                .into_response(),
            )),
        }
    }
}

/// The per-pool routes' answer to a name no pool has.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 404,
    description = "No pool of that name.",
    content_type = "application/problem+json"
)]
#[allow(dead_code)] // a description for the OpenAPI document, never built
struct UnknownPool(crate::problem::ProblemDoc);

fn unknown_pool(manager: &PoolManager, name: String) -> Response {
    let detail = PoolError::UnknownPool {
        requested: name,
        registered: manager
            .pool_names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    }
    .to_string();
    no_store(
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-pool",
            "Pool not found",
            detail,
        )
        .into_response(),
    )
}

fn json(status: StatusCode, body: impl serde::Serialize) -> Response {
    no_store((status, axum::Json(body)).into_response())
}

/// The IETF health-check draft's media type.
const HEALTH_JSON: &str = "application/health+json";

fn health_json(status: StatusCode, body: impl serde::Serialize) -> Response {
    let mut response = json(status, body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON));
    response
}

/// How much of the pools a request may see, by the router's
/// [`HealthDetails`]: `None` when they show it nothing. The routes take this
/// instead of the policy and the request head, and ask nothing else of them.
struct Viewer(Option<View>);

impl axum::extract::FromRequestParts<RouterState> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RouterState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(View::of(&state.details, parts)))
    }
}

/// How much of the pools a request may see.
#[derive(Clone, Copy)]
enum View {
    /// Statuses and figures, no driver's words, of the server facts `tls` only.
    Summary,
    /// Everything.
    Full,
}

impl View {
    /// The view `details` grants the request; `None` when it shows the
    /// pools nothing (answer [`hidden`]).
    fn of(details: &HealthDetails, parts: &Parts) -> Option<Self> {
        if details.full(parts) {
            Some(Self::Full)
        } else if details.show(parts) {
            Some(Self::Summary)
        } else {
            None
        }
    }

    /// `stats` as this view shows them: of the server's facts only `tls`
    /// in a summary.
    fn stats(self, stats: StatsSnapshot) -> StatsSnapshot {
        match self {
            Self::Full => stats,
            Self::Summary => stats.summary(),
        }
    }

    /// `health` as this view shows it: no driver's words in a summary.
    fn health(self, health: PoolHealth) -> PoolHealth {
        match self {
            Self::Full => health,
            Self::Summary => health.summary(),
        }
    }
}

/// The 403 for a request the health details policy shows nothing.
fn hidden() -> Response {
    no_store(
        Problem::new(
            StatusCode::FORBIDDEN,
            "details-hidden",
            "Pool details hidden",
            "the health details policy hides the pools from this request; see HealthDetails"
                .to_owned(),
        )
        .into_response(),
    )
}
