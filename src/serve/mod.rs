//! `chatflow serve`: the views over HTTP, read at the committed cut from a run's change files
//! (`--from`) or from ClickHouse, with live updates and the metrics.
//!
//! * `GET /api/views`: the catalog (names, columns, types, filters).
//! * `GET /api/views/<view>?channel=&user=&place=&as_of=&limit=`: the rows at the cut, or at
//!   `as_of`, exactly as `chatflow query --format json` gives them.
//! * `GET /api/cut`, `GET /api/channels` (by messages), `GET /api/users/<user>/connections`.
//! * `GET /api/health`: the cut, when it last moved, and (inside a run) the run's counters,
//!   Kafka lag per partition and freshness.
//! * `GET /api/stream?views=a,b&channel=&user=&place=&limit=`: server-sent events. A `cut`
//!   event at once and whenever the committed cut moves, carrying every listed view at the cut
//!   (filters apply to the views that have the column) with the rows `added` and `removed`
//!   since this stream's previous event; `channels` and `health` may be listed as well (health
//!   also every second). A failed read is a `problem` event; the stream stays open.
//! * `GET /metrics`: the Prometheus text of the live registry.
//! * `GET /`: the dashboard (`index.html`), with uPlot and cytoscape embedded under `/assets/`
//!   (`rust-embed`: only the files of `assets/` can be named).
//!
//! Filters travel as data (to ClickHouse as an external table, see `query`). A bad view,
//! filter, parameter or time is a 400 with a message; an unreachable store a 503. The server
//! listens on 127.0.0.1 unless told otherwise, and any other address needs a token: every
//! request must then carry `Authorization: Bearer <token>` (`/metrics` too, unless
//! `--metrics-public`). Request bodies are limited to 16 KiB and each client address to
//! `--rate-limit` requests per second (default `RATE`; 429 beyond); a path that is not a
//! route is a 404. Responses are gzip-compressed for clients that accept it, except the event
//! stream.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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

use crate::clickhouse::cut::committed_at;
use crate::clickhouse::{committed_cut, ClickHouseError, Client};
use crate::metrics::now_ms;
use crate::query::{channel_messages, read_dir, read_view, Answer, Query, QueryError};
use crate::sinks::progress::{read_upper, PROGRESS_FILE};

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

    /// The cut and when it was committed (ms since the epoch): for change files, the progress
    /// record's modification time, taken before reading it (the record is replaced whole at
    /// each commit, so the time is never later than the commit of what is read); in
    /// ClickHouse, when the last view's writer recorded an upper at or past it. The time is
    /// looked up only if the cut differs from `last`; `None` if it does not.
    fn cut_if_moved(&self, last: &CutInfo) -> Result<Option<CutInfo>, QueryError> {
        let modified = match self {
            Store::Dir(dir) => std::fs::metadata(dir.join(PROGRESS_FILE))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64),
            Store::ClickHouse { .. } => None,
        };
        let cut = self.cut()?;
        if last.seen_ms != 0 && last.cut == cut {
            return Ok(None);
        }
        let committed = match (self, cut) {
            (Store::ClickHouse { client, database }, Some(c)) => committed_at(client, database, c).ok().flatten(),
            _ => modified.filter(|_| cut.is_some()),
        };
        Ok(Some(CutInfo { cut, committed_ms: committed, seen_ms: now_ms() }))
    }

    /// How often the cut is looked at: the progress file is cheap to read, a query is not.
    fn poll_interval(&self) -> Duration {
        match self {
            Store::Dir(_) => Duration::from_millis(50),
            Store::ClickHouse { .. } => Duration::from_millis(200),
        }
    }
}

/// The store's cut as this server last saw it.
#[derive(Clone, Debug, Default)]
struct CutInfo {
    cut: Option<u64>,
    /// When the store committed it (see `Store::committed_ms`), if it says.
    committed_ms: Option<i64>,
    /// When this server first saw it (0: not looked yet).
    seen_ms: i64,
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
    cut: tokio::sync::watch::Receiver<CutInfo>,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// Answers at a cut, by request (see `cached`): every stream shares them.
    cache: Mutex<HashMap<String, (u64, Arc<Value>)>>,
    /// Set on shutdown: the cut watcher ends, and with it every event stream.
    stopping: AtomicBool,
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
            QueryError::NoView(_) | QueryError::NoFilter { .. } | QueryError::NotCommitted { .. } => {
                StatusCode::BAD_REQUEST
            }
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
pub fn check(options: &ServeOptions, flag: &str) -> Result<()> {
    if !options.listen.ip().is_loopback() && options.token.as_deref().is_none_or(str::is_empty) {
        return Err(anyhow!(
            "{flag} {}: a non-loopback address needs --token (or CHATFLOW_TOKEN); every request must then carry it",
            options.listen
        ));
    }
    Ok(())
}

/// Checks the options and binds the listening socket (so that a port in use is reported before
/// anything else starts).
pub fn listen(options: &ServeOptions, flag: &str) -> Result<std::net::TcpListener> {
    check(options, flag)?;
    let listener = std::net::TcpListener::bind(options.listen)
        .with_context(|| format!("{flag} {}: cannot listen", options.listen))?;
    listener.set_nonblocking(true).context("setting the listening socket non-blocking")?;
    Ok(listener)
}

/// Serves `store` on `listener` (from [`listen`]) until SIGINT/SIGTERM (or until `stop` is set,
/// inside a run).
pub fn serve(
    store: Store,
    listener: std::net::TcpListener,
    options: ServeOptions,
    stop: Option<&'static AtomicBool>,
) -> Result<()> {
    if !crate::metrics::install() {
        tracing::warn!("another metrics recorder is installed: /metrics cannot be served");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).context("listening")?;
        let (cut_tx, cut_rx) = tokio::sync::watch::channel(CutInfo::default());
        let app = Arc::new(App {
            store,
            token: options.token,
            metrics_public: options.metrics_public,
            rate: options.rate,
            cut: cut_rx,
            buckets: Mutex::default(),
            cache: Mutex::default(),
            stopping: AtomicBool::new(false),
        });
        tokio::spawn(watch_cut(Arc::clone(&app), cut_tx));
        eprintln!("chatflow serve: listening on http://{}", listener.local_addr()?);
        let router = router(Arc::clone(&app));
        let shutdown = async move {
            match stop {
                Some(flag) => {
                    while !flag.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                None => shutdown_signal().await,
            }
            // Open event streams would hold the graceful shutdown forever: end them.
            app.stopping.store(true, Ordering::Relaxed);
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

/// Follows the store's cut for the event streams until the server stops (dropping `tx` then
/// ends every stream).
async fn watch_cut(app: Arc<App>, tx: tokio::sync::watch::Sender<CutInfo>) {
    while !app.stopping.load(Ordering::Relaxed) {
        let reader = Arc::clone(&app);
        let last = tx.borrow().clone();
        let looked = tokio::task::spawn_blocking(move || reader.store.cut_if_moved(&last));
        if let Ok(Ok(Some(moved))) = looked.await {
            tx.send_replace(moved);
        }
        tokio::time::sleep(app.store.poll_interval()).await;
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(include_str!("index.html")) }))
        .route("/assets/{*path}", get(asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/views", get(catalog))
        .route("/api/views/{view}", get(view))
        .route("/api/cut", get(cut))
        .route("/api/health", get(health))
        .route("/api/channels", get(channels))
        .route("/api/users/{user}/connections", get(connections))
        .route("/api/stream", get(stream))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), guard))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
        // gzip for clients that accept it (the page's scripts: 509 KB → 167 KB); never for
        // the event stream, whose events must not wait in a compressor.
        .layer(tower_http::compression::CompressionLayer::new())
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

/// The vendored assets (see `assets/VERSIONS.md`), embedded in the binary: a request names
/// one of them by its path under `assets/`, and nothing else can be served.
#[derive(rust_embed::Embed)]
#[folder = "src/serve/assets/"]
struct Assets;

async fn asset(Path(path): Path<String>) -> Response {
    match Assets::get(&path) {
        Some(file) => {
            let kind = file.metadata.mimetype().to_owned();
            ([(header::CONTENT_TYPE, kind.as_str()), (header::CACHE_CONTROL, "public, max-age=86400")], file.data)
                .into_response()
        }
        None => ApiError(StatusCode::NOT_FOUND, "no such asset".into()).into_response(),
    }
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
                        dataflows::ColumnType::Int | dataflows::ColumnType::Wide => "int",
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

/// A 400 naming the first parameter that is not `known`.
fn only_known(params: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {unknown:?}; known: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

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
    only_known(&params, &PARAMETERS)?;
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

/// The channels by messages, from `channel_activity` read with `query`'s time.
fn channel_list(store: &Store, as_of: Option<u64>) -> Result<Value, QueryError> {
    let activity = store.read(&Query { as_of, ..Query::all("channel_activity") })?;
    let list: Vec<Value> =
        channel_messages(&activity).into_iter().map(|(c, m)| json!({"channel": c, "messages": m})).collect();
    Ok(json!({"cut": activity.cut, "channels": list}))
}

async fn channels(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    blocking(&app, |store| Ok(Json(channel_list(store, None)?))).await
}

/// The run's health: the cut and when it moved; inside a run, its counters, each Kafka
/// partition's lag and the freshness of the latest durable live records.
fn health_json(info: &CutInfo) -> Value {
    let now = now_ms();
    let snapshot = crate::metrics::snapshot();
    let run = snapshot.has("chatflow_records_total", &[]).then(|| {
        let lag: Vec<Value> = snapshot
            .gauges("chatflow_kafka_lag")
            .into_iter()
            .map(|(labels, lag)| {
                let label = |name: &str| labels.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str());
                json!({"source": label("source"), "partition": label("partition"), "lag": lag as i64})
            })
            .collect();
        json!({
            "records": snapshot.sum("chatflow_records_total", &[]),
            "events": snapshot.sum("chatflow_events_total", &[]),
            "dead_letters": snapshot.sum("chatflow_dead_letters_total", &[]),
            "rows_written": snapshot.sum("chatflow_rows_written_total", &[]),
            "kafka_lag": lag,
            "freshness_seconds": snapshot.gauges("chatflow_freshness_latest_seconds").first().map(|(_, v)| *v),
        })
    });
    json!({
        "cut": info.cut,
        "committed_ms": info.committed_ms,
        "seen_ms": (info.seen_ms > 0).then_some(info.seen_ms),
        "now_ms": now,
        "run": run,
    })
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    Json(health_json(&app.cut.borrow()))
}

async fn connections(State(app): State<Arc<App>>, Path(user): Path<String>) -> Result<Json<Value>, ApiError> {
    blocking(&app, move |store| {
        let query =
            Query { view: "top_connections", channel: None, user: Some(&user), place: None, as_of: None, limit: None };
        Ok(Json(answer_json(&store.read(&query)?)))
    })
    .await
}

/// What one event stream carries: the views (with their filters) and the extras it asked for.
struct Subscription {
    views: Vec<&'static str>,
    channels: bool,
    health: bool,
    channel: Option<String>,
    user: Option<String>,
    place: Option<String>,
    limit: Option<u64>,
}

/// The parameters an event stream may carry.
const STREAM_PARAMETERS: [&str; 5] = ["views", "channel", "user", "place", "limit"];

impl Subscription {
    fn parse(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        only_known(params, &STREAM_PARAMETERS)?;
        let mut sub = Subscription {
            views: Vec::new(),
            channels: false,
            health: false,
            channel: params.get("channel").cloned(),
            user: params.get("user").cloned(),
            place: params.get("place").cloned(),
            limit: number(params, "limit")?,
        };
        for name in params.get("views").map(String::as_str).unwrap_or("").split(',').filter(|n| !n.is_empty()) {
            match name {
                "channels" => sub.channels = true,
                "health" => sub.health = true,
                name => {
                    let view = dataflows::view(name).map_err(|e| {
                        ApiError(StatusCode::BAD_REQUEST, format!("views: {e} (or `channels`, `health`)"))
                    })?;
                    if !sub.views.contains(&view.name) {
                        sub.views.push(view.name);
                    }
                }
            }
        }
        Ok(sub)
    }

    /// The query for `view` at time `at`: each filter applies if the view has its column.
    fn query(&self, view: &'static str, at: u64) -> Query<'_> {
        let def = dataflows::view(view).expect("checked in parse");
        let has = |name: &str| !def.filter_columns(name).is_empty();
        Query {
            view,
            channel: self.channel.as_deref().filter(|_| has("channel")),
            user: self.user.as_deref().filter(|_| has("user")),
            place: self.place.as_deref().filter(|_| has("place")),
            as_of: Some(at),
            limit: self.limit,
        }
    }
}

/// `f`'s answer for request `key` at cut `cut`, computed once for every stream that asks.
fn cached(
    app: &App,
    key: String,
    cut: u64,
    f: impl FnOnce() -> Result<Value, QueryError>,
) -> Result<Arc<Value>, QueryError> {
    if let Some((at, value)) = app.cache.lock().expect("not poisoned").get(&key) {
        if *at == cut {
            return Ok(Arc::clone(value));
        }
    }
    let value = Arc::new(f()?);
    let mut cache = app.cache.lock().expect("not poisoned");
    if cache.len() > 1024 {
        cache.retain(|_, (at, _)| *at == cut);
    }
    cache.insert(key, (cut, Arc::clone(&value)));
    Ok(value)
}

/// One event stream's position: what it last sent of each view.
struct Follower {
    app: Arc<App>,
    sub: Arc<Subscription>,
    cut: tokio::sync::watch::Receiver<CutInfo>,
    /// The rows (as JSON text, in order) last sent of each view.
    sent: HashMap<&'static str, Vec<String>>,
    started: bool,
}

impl Follower {
    /// The next event: at once for the first, then when the cut moves (or every second, for
    /// health); `None` once the server stops.
    async fn next(mut self) -> Option<(Result<Event, std::convert::Infallible>, Self)> {
        if self.started || self.cut.borrow().seen_ms == 0 {
            tokio::select! {
                changed = self.cut.changed() => changed.ok()?,
                () = tokio::time::sleep(Duration::from_secs(1)), if self.sub.health && self.started => {}
            }
        }
        self.started = true;
        let info = self.cut.borrow_and_update().clone();
        let event = self.event(&info).await;
        Some((Ok(event), self))
    }

    async fn event(&mut self, info: &CutInfo) -> Event {
        let (app, sub, cut) = (Arc::clone(&self.app), Arc::clone(&self.sub), info.cut);
        let read = tokio::task::spawn_blocking(move || -> Result<_, QueryError> {
            // Every view at the same time: the one below the cut.
            let Some(at) = cut.and_then(|c| c.checked_sub(1)) else {
                return Ok((Vec::new(), None));
            };
            let mut answers = Vec::new();
            for &view in &sub.views {
                let query = sub.query(view, at);
                let key =
                    format!("{view}\0{:?}\0{:?}\0{:?}\0{:?}", query.channel, query.user, query.place, query.limit);
                answers.push((view, cached(&app, key, at, || Ok(answer_json(&app.store.read(&query)?)))?));
            }
            let channels = match sub.channels {
                true => Some(cached(&app, "\0channels".into(), at, || channel_list(&app.store, Some(at)))?),
                false => None,
            };
            Ok((answers, channels))
        })
        .await;
        let (answers, channels) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                let ApiError(status, message) = ApiError::from(e);
                return Event::default()
                    .event("problem")
                    .data(json!({"status": status.as_u16(), "error": message}).to_string());
            }
            Err(e) => {
                return Event::default()
                    .event("problem")
                    .data(json!({"status": 500, "error": e.to_string()}).to_string())
            }
        };
        let mut views = serde_json::Map::new();
        for (view, answer) in answers {
            let rows: Vec<String> =
                answer["rows"].as_array().map(Vec::as_slice).unwrap_or_default().iter().map(Value::to_string).collect();
            let before = self.sent.remove(view).unwrap_or_default();
            let mut entry = answer.as_object().cloned().unwrap_or_default();
            entry.insert("added".into(), only_in(&rows, &before).into());
            entry.insert("removed".into(), only_in(&before, &rows).into());
            views.insert(view.into(), entry.into());
            self.sent.insert(view, rows);
        }
        let mut data = json!({
            "cut": info.cut,
            "committed_ms": info.committed_ms,
            "seen_ms": info.seen_ms,
            "sent_ms": now_ms(),
            "views": views,
        });
        if let Some(channels) = channels {
            data["channels"] = channels["channels"].clone();
        }
        if self.sub.health {
            data["health"] = health_json(info);
        }
        Event::default().event("cut").data(data.to_string())
    }
}

/// The rows of `rows` (JSON text) that `other` does not hold, counting copies, in order.
fn only_in(rows: &[String], other: &[String]) -> Vec<Value> {
    let mut held: HashMap<&str, usize> = HashMap::new();
    for row in other {
        *held.entry(row).or_default() += 1;
    }
    rows.iter()
        .filter(|row| match held.get_mut(row.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .map(|row| serde_json::from_str(row).expect("serialised by the server"))
        .collect()
}

async fn stream(
    State(app): State<Arc<App>>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let sub = Arc::new(Subscription::parse(&params)?);
    let follower = Follower { cut: app.cut.clone(), app, sub, sent: HashMap::new(), started: false };
    let events = futures_util::stream::unfold(follower, Follower::next);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn metrics() -> Response {
    match crate::metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => {
            ApiError(StatusCode::SERVICE_UNAVAILABLE, "the metrics registry is not installed".into()).into_response()
        }
    }
}
