//! `chatflow serve`: the views over HTTP, read at the committed cut from a run's change files
//! (`--from`) or from ClickHouse, with live updates and the metrics.
//!
//! * `GET /api/views`: the catalog (names, columns, types, filters).
//! * `GET /api/views/<view>?channel=&user=&place=&as_of=&limit=`: the rows at the cut, or at
//!   `as_of`, exactly as `chatflow query --format json` gives them.
//! * `GET /api/cut`, `GET /api/channels` (by messages), `GET /api/users/<user>/connections`.
//! * `GET /api/stream`: server-sent events; a `cut` event whenever the committed cut moves.
//! * `GET /metrics`: the Prometheus text of the live registry.
//! * `GET /`: the dashboard (`index.html`), with uPlot and cytoscape embedded under `/assets/`.
//!
//! Filters travel as data (to ClickHouse as an external table, see `query`). A bad view,
//! filter, parameter or time is a 400 with a message; an unreachable store a 503. The server
//! listens on 127.0.0.1 unless told otherwise, and any other address needs a token: every
//! request must then carry `Authorization: Bearer <token>` (`/metrics` too, unless
//! `--metrics-public`). Request bodies are limited to 16 KiB and each client address to
//! `--rate-limit` requests per second (default `RATE`; 429 beyond); a path that is not a
//! route is a 404.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use axum::extract::{ConnectInfo, Path, Query as QueryParams, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_stream::StreamExt as _;

use crate::clickhouse::{committed_cut, ClickHouseError, Client};
use crate::query::{channel_messages, read_dir, read_view, Answer, Query, QueryError};
use crate::sinks::progress::read_upper;

/// Requests per second allowed to one client address by default (with a burst of twice as
/// many).
pub const RATE: f64 = 200.0;

/// Where the views are read.
pub enum Store {
    /// A run's output directory (change files and `_progress.csv`).
    Dir(PathBuf),
    ClickHouse {
        client: Client,
        database: String,
    },
}

impl Store {
    fn read(&self, query: &Query) -> Result<Answer, QueryError> {
        match self {
            Store::Dir(dir) => read_dir(dir, query),
            Store::ClickHouse { client, database } => read_view(client, database, query),
        }
    }

    fn cut(&self) -> Result<Option<u64>, QueryError> {
        match self {
            Store::Dir(dir) => {
                read_upper(dir).map_err(|e| QueryError::File { path: dir.clone(), reason: e.to_string() })
            }
            Store::ClickHouse { client, database } => Ok(committed_cut(client, database)?),
        }
    }
}

/// How the server is reached and guarded.
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub metrics_public: bool,
    /// Requests per second per client address (0: no limit).
    pub rate: f64,
}

struct App {
    store: Store,
    token: Option<String>,
    metrics_public: bool,
    rate: f64,
    cut: tokio::sync::watch::Receiver<Option<u64>>,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// A failed request: its status and what to tell the client.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::NoView(_) => StatusCode::NOT_FOUND,
            QueryError::NoFilter { .. } | QueryError::NotCommitted { .. } => StatusCode::BAD_REQUEST,
            QueryError::NothingCommitted(_) | QueryError::NotAnOutDir(_) | QueryError::File { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            QueryError::ClickHouse(ClickHouseError::Unreachable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::ClickHouse(ClickHouseError::BadDatabase(_)) => StatusCode::BAD_REQUEST,
            QueryError::ClickHouse(_) => StatusCode::BAD_GATEWAY,
            QueryError::Multiplicity { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// Checks the options: any address but loopback needs a token.
pub fn check(options: &ServeOptions) -> Result<()> {
    if !options.listen.ip().is_loopback() && options.token.as_deref().is_none_or(str::is_empty) {
        return Err(anyhow!(
            "--listen {}: a non-loopback address needs --token (or CHATFLOW_TOKEN); every request must then carry it",
            options.listen
        ));
    }
    Ok(())
}

/// Serves `store` until SIGINT/SIGTERM (or until `stop` is set, inside a run).
pub fn serve(store: Store, options: ServeOptions, stop: Option<&'static std::sync::atomic::AtomicBool>) -> Result<()> {
    check(&options)?;
    if !crate::metrics::install() {
        tracing::warn!("another metrics recorder is installed: /metrics cannot be served");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("--listen {}: cannot listen", options.listen))?;
        let (cut_tx, cut_rx) = tokio::sync::watch::channel(None);
        let app = Arc::new(App {
            store,
            token: options.token,
            metrics_public: options.metrics_public,
            rate: options.rate,
            cut: cut_rx,
            buckets: Mutex::default(),
        });
        tokio::spawn(watch_cut(Arc::clone(&app), cut_tx));
        eprintln!("chatflow serve: listening on http://{}", listener.local_addr()?);
        let router = router(app);
        let shutdown = async move {
            match stop {
                Some(flag) => {
                    while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                None => shutdown_signal().await,
            }
        };
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving")
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Follows the store's cut (every 200 ms) for the event stream.
async fn watch_cut(app: Arc<App>, tx: tokio::sync::watch::Sender<Option<u64>>) {
    loop {
        let reader = Arc::clone(&app);
        if let Ok(Ok(cut)) = tokio::task::spawn_blocking(move || reader.store.cut()).await {
            tx.send_if_modified(|old| {
                let moved = *old != cut;
                *old = cut;
                moved
            });
        }
        if tx.is_closed() && tx.receiver_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(include_str!("index.html")) }))
        .route(
            "/assets/uPlot.iife.min.js",
            get(|| asset("text/javascript", include_bytes!("assets/uplot/uPlot.iife.min.js"))),
        )
        .route("/assets/uPlot.min.css", get(|| asset("text/css", include_bytes!("assets/uplot/uPlot.min.css"))))
        .route(
            "/assets/cytoscape.min.js",
            get(|| asset("text/javascript", include_bytes!("assets/cytoscape/cytoscape.min.js"))),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/views", get(catalog))
        .route("/api/views/{view}", get(view))
        .route("/api/cut", get(cut))
        .route("/api/channels", get(channels))
        .route("/api/users/{user}/connections", get(connections))
        .route("/api/stream", get(stream))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), guard))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
        .with_state(app)
}

/// The token check and the rate limit, before any handler.
async fn guard(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if app.rate > 0.0 {
        let rate = app.rate;
        let mut buckets = app.buckets.lock().expect("not poisoned");
        let (tokens, last) = buckets.entry(peer.ip()).or_insert((2.0 * rate, Instant::now()));
        *tokens = (*tokens + last.elapsed().as_secs_f64() * rate).min(2.0 * rate);
        *last = Instant::now();
        if *tokens < 1.0 {
            return ApiError(StatusCode::TOO_MANY_REQUESTS, "too many requests; slow down".into()).into_response();
        }
        *tokens -= 1.0;
    }
    if let Some(token) = &app.token {
        let open = app.metrics_public && request.uri().path() == "/metrics";
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let expected = format!("Bearer {token}");
        if !open && given.is_none_or(|g| !constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            return ApiError(StatusCode::UNAUTHORIZED, "this server needs `Authorization: Bearer <token>`".into())
                .into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs a blocking read of the store off the async threads.
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || f(&app.store))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("reading failed: {e}")))?
}

/// A vendored asset (see `assets/VERSIONS.md`), embedded in the binary: every asset is a route
/// of its own, so no request path ever names a file.
async fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=86400")], bytes).into_response()
}

async fn catalog() -> Json<Value> {
    let views: Vec<Value> = dataflows::CATALOG
        .iter()
        .map(|v| {
            let columns: Vec<Value> = v
                .columns
                .iter()
                .map(|c| {
                    let ty = match c.ty {
                        dataflows::ColumnType::Int => "int",
                        dataflows::ColumnType::Text => "text",
                    };
                    json!({"name": c.name, "type": ty, "filter": c.filter})
                })
                .collect();
            json!({"name": v.name, "columns": columns})
        })
        .collect();
    Json(json!({ "views": views }))
}

/// The parameters a view request may carry.
const PARAMETERS: [&str; 5] = ["channel", "user", "place", "as_of", "limit"];

fn number(params: &HashMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    params
        .get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError(StatusCode::BAD_REQUEST, format!("{key}={v:?}: expected a whole number of 0 or more"))
            })
        })
        .transpose()
}

fn answer_json(answer: &Answer) -> Value {
    json!({"view": answer.view.name, "cut": answer.cut, "at": answer.at, "columns": answer.view.column_names(), "rows": answer.json_rows()})
}

async fn view(
    State(app): State<Arc<App>>,
    Path(view): Path<String>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(unknown) = params.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {unknown:?}; known: {}", PARAMETERS.join(", ")),
        ));
    }
    let (as_of, limit) = (number(&params, "as_of")?, number(&params, "limit")?);
    blocking(&app, move |store| {
        let query = Query {
            view: &view,
            channel: params.get("channel").map(String::as_str),
            user: params.get("user").map(String::as_str),
            place: params.get("place").map(String::as_str),
            as_of,
            limit,
        };
        Ok(answer_json(&store.read(&query)?))
    })
    .await
    .map(Json)
}

async fn cut(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let cut = blocking(&app, |store| Ok(store.cut()?)).await?;
    Ok(Json(json!({ "cut": cut })))
}

async fn channels(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    blocking(&app, |store| {
        let activity = store.read(&Query::all("channel_activity"))?;
        let list: Vec<Value> =
            channel_messages(&activity).into_iter().map(|(c, m)| json!({"channel": c, "messages": m})).collect();
        Ok(Json(json!({"cut": activity.cut, "channels": list})))
    })
    .await
}

async fn connections(State(app): State<Arc<App>>, Path(user): Path<String>) -> Result<Json<Value>, ApiError> {
    blocking(&app, move |store| {
        let query =
            Query { view: "top_connections", channel: None, user: Some(&user), place: None, as_of: None, limit: None };
        Ok(Json(answer_json(&store.read(&query)?)))
    })
    .await
}

async fn stream(
    State(app): State<Arc<App>>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let updates = tokio_stream::wrappers::WatchStream::new(app.cut.clone())
        .map(|cut| Ok(Event::default().event("cut").data(json!({ "cut": cut }).to_string())));
    Sse::new(updates).keep_alive(KeepAlive::default())
}

async fn metrics() -> Response {
    match crate::metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => {
            ApiError(StatusCode::SERVICE_UNAVAILABLE, "the metrics registry is not installed".into()).into_response()
        }
    }
}
