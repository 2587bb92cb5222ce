//! The coordinator's HTTP side: a live web UI, its JSON API under `/api/v1/`, and Prometheus
//! metrics at `/metrics`. Everything is served by this process; the page loads no external
//! resource.

use std::time::Instant;

use axum::extract::{Path, State as Ax};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use protocol::JobId;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::service::Coordinator;
use crate::state::Page;

const PAGE: &str = include_str!("ui/index.html");

/// With authentication on, every route but the page itself (which holds no data) needs a
/// token that may read: `authorization: Bearer <token>`. The page asks for one when the API
/// refuses it.
async fn authenticate(
    Ax(c): Ax<Coordinator>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(auth) = c.auth() {
        if !OPEN_PATHS.contains(&request.uri().path()) {
            let header = request
                .headers()
                .get(protocol::auth::HEADER)
                .and_then(|v| v.to_str().ok());
            // Reading needs a token that may read; acting (POST) one that may submit.
            let reading = matches!(
                *request.method(),
                axum::http::Method::GET | axum::http::Method::HEAD
            );
            let (role, verb) = if reading {
                (protocol::auth::Role::Read, "read")
            } else {
                (protocol::auth::Role::Submit, "act on")
            };
            let what = format!("{verb} {}", request.uri().path());
            if let Err(d) = auth.check(header, role, &what) {
                let code = match d {
                    protocol::auth::Denied::Role { .. } => StatusCode::FORBIDDEN,
                    _ => StatusCode::UNAUTHORIZED,
                };
                return (code, d.to_string()).into_response();
            }
        }
    }
    next.run(request).await
}

/// Paths served without a token: the page (which asks for one) and the health checks that
/// load balancers and service managers call.
pub const OPEN_PATHS: [&str; 3] = ["/", "/healthz", "/readyz"];

/// Every route, with its handler: the router is built from this list, and tests walk it.
fn routes() -> Vec<(&'static str, axum::routing::MethodRouter<Coordinator>)> {
    vec![
        ("/", get(|| async { Html(PAGE) })),
        ("/api/v1/cluster", get(cluster)),
        ("/api/v1/jobs", get(jobs).post(submit)),
        ("/api/v1/jobs/{id}", get(job)),
        ("/api/v1/jobs/{id}/attempts", get(attempts)),
        ("/api/v1/jobs/{id}/kill", axum::routing::post(kill)),
        ("/api/v1/jobs/{id}/attempts/{attempt}/log", get(attempt_log)),
        ("/api/v1/schedules", get(schedules)),
        ("/api/v1/schedules/{name}", get(schedule)),
        (
            "/api/v1/schedules/{name}/{action}",
            axum::routing::post(schedule_action),
        ),
        ("/api/v1/backfills", get(backfills)),
        ("/api/v1/storage", get(storage)),
        ("/metrics", get(metrics)),
        ("/healthz", get(|| async { "ok\n" })),
        ("/readyz", get(readyz)),
    ]
}

/// The paths the HTTP server serves (with `{param}` placeholders): `GET`, and `POST` for the
/// actions (submit, kill, schedule pause, resume and run).
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(p, _)| p).collect()
}

/// Serves the UI, API and metrics on `listener` until `shutdown`, over TLS when `tls` is
/// given (a plaintext client then fails its handshake and is dropped).
pub async fn serve(
    listener: TcpListener,
    coordinator: Coordinator,
    tls: Option<protocol::tls::ServerTls>,
    shutdown: CancellationToken,
) {
    let mut app = Router::new();
    for (path, handler) in routes() {
        app = app.route(path, handler);
    }
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            coordinator.clone(),
            authenticate,
        ))
        .with_state(coordinator);
    let result = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Some(t) => match TlsListener::new(listener, &t, shutdown.clone()) {
            Ok(l) => {
                axum::serve(l, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
            Err(e) => {
                tracing::error!(error = %e, "web UI: TLS certificate or key cannot be used");
                return;
            }
        },
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "http server failed");
    }
}

/// How long a connection may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections that finished their TLS handshake. Handshakes run in tasks of their own, so a
/// client that stalls in one holds up nobody else.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    addr: std::net::SocketAddr,
}

impl TlsListener {
    fn new(
        listener: TcpListener,
        tls: &protocol::tls::ServerTls,
        shutdown: CancellationToken,
    ) -> Result<TlsListener, String> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| format!("key: {e}"))?;
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "web UI: accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "web UI: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "web UI: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop stopped (shutdown): wait for the graceful shutdown to end us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

fn job_json(s: &protocol::pb::JobStatus) -> Value {
    crate::json::job(&crate::client::JobStatus::from(s.clone()))
}

/// Actions are POSTed with `Content-Type: application/json`: a 415 answer where they are not.
fn require_json(headers: &axum::http::HeaderMap) -> Option<Response> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    (!json).then(|| {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "actions are POSTed with Content-Type: application/json\n",
        )
            .into_response()
    })
}

/// A refused action: the HTTP status of its gRPC code, and `{"error": message}`.
fn refused(e: crate::service::ServiceError) -> Response {
    let status = tonic::Status::from(e);
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(json!({"error": status.message()}))).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

/// The body of `POST /api/v1/jobs`: what `quern job submit` takes, by the flags' names.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    job: String,
    inputs: Vec<String>,
    output: String,
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    reducers: Option<u32>,
    split_size: Option<u64>,
    task_memory: Option<u64>,
    max_attempts: Option<u32>,
    speculation: Option<bool>,
    #[serde(default)]
    max_bad_records: u64,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    from: String,
    #[serde(default)]
    full_if_changed: bool,
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// Who submits, for the per-caller rate limit: the token's id (never its secret).
fn http_caller(headers: &axum::http::HeaderMap) -> String {
    let id = headers
        .get(protocol::auth::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.split('_').nth(1));
    match id {
        Some(id) => format!("token:{id}"),
        None => "http".to_string(),
    }
}

/// `POST /api/v1/jobs`: submits a job of the cluster's own binary (a job binary is uploaded
/// with `quern job submit`). Paths are absolute or URLs: the coordinator has no working
/// directory of the caller's. 201 `{"id", "warnings"}` with a `Location`; 400, 404, 409,
/// 429 or 503 with `{"error"}`.
async fn submit(
    Ax(c): Ax<Coordinator>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = require_json(&headers) {
        return r;
    }
    let b: SubmitBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(format!("bad job: {e}")),
    };
    let absolute = |p: &String| p.starts_with('/') || p.contains("://");
    if let Some(p) = b
        .inputs
        .iter()
        .chain([&b.output])
        .chain((!b.from.is_empty()).then_some(&b.from))
        .find(|p| !absolute(p))
    {
        return bad_request(format!(
            "{p:?} is relative: give absolute paths or URLs (the coordinator does not know the caller's directory)"
        ));
    }
    if let Err(e) = c.limit_caller(&http_caller(&headers)) {
        return refused(e);
    }
    let mut spec = protocol::JobSpec::new(b.job, b.inputs, b.output);
    spec.params = b.params;
    spec.reducers = b.reducers.unwrap_or(1);
    spec.split_size = b.split_size.unwrap_or(spec.split_size);
    spec.task_memory = b.task_memory.unwrap_or(spec.task_memory);
    spec.max_attempts = b.max_attempts.unwrap_or(spec.max_attempts);
    spec.speculation = b.speculation.unwrap_or(true);
    spec.max_bad_records = b.max_bad_records;
    spec.overwrite = b.overwrite;
    spec.from = b.from;
    spec.full_if_changed = b.full_if_changed;
    spec.name = b.name;
    spec.labels = b.labels;
    match c.submit_spec(spec).await {
        Ok((id, warnings)) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/jobs/{id}"))],
            Json(json!({"id": id.to_string(), "warnings": warnings})),
        )
            .into_response(),
        Err(e) => refused(e),
    }
}

/// `POST /api/v1/schedules/{name}/pause|resume|run`; `run` takes an optional body
/// `{"at": "2026-11-30"}` (default: the latest time due) and answers `{"backfill",
/// "logical_time"}`, as `quern schedule run` does.
async fn schedule_action(
    Ax(c): Ax<Coordinator>,
    Path((name, action)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = require_json(&headers) {
        return r;
    }
    let op = match action.as_str() {
        "pause" => protocol::pb::ScheduleOp::Pause,
        "resume" => protocol::pb::ScheduleOp::Resume,
        "run" => {
            #[derive(serde::Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct RunBody {
                at: Option<String>,
            }
            let b: RunBody = if body.iter().all(u8::is_ascii_whitespace) {
                RunBody::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(b) => b,
                    Err(e) => return bad_request(format!("bad body: {e}")),
                }
            };
            return match c.run_schedule_now(&name, b.at.as_deref()).await {
                Ok((backfill, t)) => {
                    Json(json!({"schedule": name, "backfill": backfill, "logical_time": t}))
                        .into_response()
                }
                Err(e) => refused(e),
            };
        }
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("no action {action:?} (pause, resume, run)")})),
            )
                .into_response()
        }
    };
    let request = protocol::pb::SetScheduleRequest {
        name: name.clone(),
        op: op as i32,
    };
    match c.set_schedule_rpc(request).await {
        Ok(()) => Json(json!({"schedule": name, "paused": action == "pause"})).into_response(),
        Err(e) => refused(e),
    }
}

/// `POST /api/v1/jobs/{id}/kill` with `Content-Type: application/json` (which a page of
/// another origin cannot send without the browser asking first, and nothing here answers
/// such a request: no cross-site kills on a cluster without tokens): 200 `{"killed": true}`,
/// 409 with the state of a job that is not running, 404 for none.
async fn kill(
    Ax(c): Ax<Coordinator>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    // Read though unused: an answer sent while the client's body is still unread makes the
    // server close the connection under it, and the client may meet a reset instead of the
    // answer.
    _body: axum::body::Bytes,
) -> Response {
    if let Some(r) = require_json(&headers) {
        return r;
    }
    let Ok(id) = id.parse::<JobId>() else {
        return (StatusCode::BAD_REQUEST, format!("bad job id {id:?}\n")).into_response();
    };
    match c.kill_job_now(id).await {
        Ok(true) => Json(json!({"killed": true, "id": id.to_string()})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Ok(false) => match c.read(|s| s.status(id, Instant::now())) {
            Some(s) => (
                StatusCode::CONFLICT,
                Json(
                    json!({"killed": false, "id": id.to_string(), "state": job_json(&s)["state"]}),
                ),
            )
                .into_response(),
            None => (StatusCode::NOT_FOUND, format!("no job {id}\n")).into_response(),
        },
    }
}

/// Ready to take jobs: the journal is written and the coordinator is not stopping (503 and
/// the reason otherwise); says how many workers are alive.
async fn readyz(Ax(c): Ax<Coordinator>) -> Response {
    let alive = c.read(crate::state::State::live_workers);
    let not_ready = if let Some(down) = c.journal_down() {
        Some(format!("the journal cannot be written: {down}"))
    } else if c.stopping().is_cancelled() {
        Some("the coordinator is stopping".to_string())
    } else {
        None
    };
    match not_ready {
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": why, "workers_alive": alive})),
        )
            .into_response(),
        None => Json(json!({"ready": true, "workers_alive": alive})).into_response(),
    }
}

async fn cluster(Ax(c): Ax<Coordinator>) -> Json<Value> {
    let now = Instant::now();
    let (view, list, epoch) = c.read(|s| (s.workers_view(now), s.list(now), s.epoch));
    let workers: Vec<Value> = view
        .into_iter()
        .map(|w| {
            json!({
                "id": w.id.to_string(),
                "alive": w.alive,
                "storage_host": w.storage_host,
                "shuffle_addr": w.shuffle_addr,
                "last_heartbeat_ms": w.last_seen_ms,
                "max_heartbeat_gap_ms": w.max_gap_ms,
                "running_tasks": w.running,
                "slots": w.slots,
                "home": w.home,
            })
        })
        .collect();
    let bytes: u64 = list.iter().map(|s| s.bytes_read).sum();
    Json(json!({"epoch": epoch.0, "workers": workers, "input_bytes_total": bytes}))
}

/// Jobs, newest first; `?state=S`, `?name=N`, `?label=k=v` (repeatable, all must match) keep
/// those that match, `?limit=N` the newest N of them.
async fn jobs(
    Ax(c): Ax<Coordinator>,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    let (mut state, mut name, mut labels, mut limit) = (None, None, Vec::new(), usize::MAX);
    for (k, v) in &query {
        match k.as_str() {
            "state" => state = Some(v.as_str()),
            "name" => name = Some(v.as_str()),
            "label" => match v.split_once('=') {
                Some(kv) => labels.push(kv),
                None => {
                    return (StatusCode::BAD_REQUEST, "label: expected key=value").into_response()
                }
            },
            "limit" => match v.parse() {
                Ok(n) => limit = n,
                Err(_) => return (StatusCode::BAD_REQUEST, "limit: a number").into_response(),
            },
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {k:?} (state, name, label, limit)"),
                )
                    .into_response()
            }
        }
    }
    let list = c.read(|s| s.list(Instant::now()));
    let keep = |j: &crate::client::JobStatus| {
        state.is_none_or(|s| j.state.name() == s)
            && name.is_none_or(|n| j.name == n)
            && labels
                .iter()
                .all(|(k, v)| j.labels.get(*k).map(String::as_str) == Some(*v))
    };
    Json(Value::Array(
        list.into_iter()
            .rev()
            .map(crate::client::JobStatus::from)
            .filter(keep)
            .take(limit)
            .map(|j| crate::json::job(&j))
            .collect(),
    ))
    .into_response()
}

async fn job(Ax(c): Ax<Coordinator>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return (StatusCode::BAD_REQUEST, "bad job id").into_response();
    };
    let found = c.read(|s| {
        let spec = s.spec_of(id).cloned();
        s.status(id, Instant::now()).zip(spec)
    });
    match found {
        Some((s, spec)) => {
            let mut v = job_json(&s);
            v["spec"] = submit_form(&spec);
            Json(v).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such job").into_response(),
    }
}

/// A job's spec in the form `POST /api/v1/jobs` takes (what resubmits it), with
/// `"resubmittable"`: false for a job of an uploaded binary, which only `quern job submit`
/// can send.
fn submit_form(spec: &protocol::JobSpec) -> Value {
    json!({
        "job": spec.job,
        "inputs": spec.inputs,
        "output": spec.output,
        "params": spec.params,
        "reducers": spec.reducers,
        "split_size": spec.split_size,
        "task_memory": spec.task_memory,
        "max_attempts": spec.max_attempts,
        "speculation": spec.speculation,
        "max_bad_records": spec.max_bad_records,
        "overwrite": spec.overwrite,
        "from": spec.from,
        "full_if_changed": spec.full_if_changed,
        "name": spec.name,
        "labels": spec.labels,
        "resubmittable": spec.binary.is_empty(),
    })
}

#[derive(serde::Deserialize)]
struct PageQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

/// A page of a job's attempts (`?offset=&limit=`; all of them when no limit is given), with
/// how many it has in all in the `X-Total-Count` header.
async fn attempts(
    Ax(c): Ax<Coordinator>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return (StatusCode::BAD_REQUEST, "bad job id").into_response();
    };
    let now = Instant::now();
    let page = Page {
        offset: q.offset,
        limit: q.limit,
    };
    let Some(page) = c.read(|s| s.attempts_of(id, page)) else {
        return (StatusCode::NOT_FOUND, "no such job").into_response();
    };
    // Start times are relative to the job's first attempt, for the timeline.
    let t0 = page.first_started.unwrap_or(now);
    let total = page.total;
    let list: Vec<Value> = page
        .attempts
        .into_iter()
        .map(|a| {
            let r = a.record;
            json!({
                "start_ms": r.started.duration_since(t0).as_millis() as u64,
                "attempt": r.attempt.to_string(),
                "name": r.name(id),
                "task": format!("{}-{}", r.kind.name(), r.index),
                "worker": r.worker.to_string(),
                "outcome": r.outcome.name(),
                "error": r.error,
                "duration_ms": r.finished.unwrap_or(now).duration_since(r.started).as_millis() as u64,
                "local": r.local,
                "bytes_read": a.bytes.map(|b| b.0),
                "bytes_written": a.bytes.map(|b| b.1),
                "log": format!("/api/v1/jobs/{id}/attempts/{}/log", r.attempt),
            })
        })
        .collect();
    (
        [("x-total-count", total.to_string())],
        Json(Value::Array(list)),
    )
        .into_response()
}

/// Files the storage browser lists at most per request.
const STORAGE_LIST_MAX: usize = 1000;

#[derive(serde::Deserialize)]
struct StorageQuery {
    path: String,
}

/// Lists the files at a storage URL or local path (a file, a directory's data files, or a
/// glob), with their sizes: the storage browser. Names only; no contents are served.
async fn storage(
    Ax(c): Ax<Coordinator>,
    axum::extract::Query(q): axum::extract::Query<StorageQuery>,
) -> Response {
    if q.path.is_empty() || q.path.contains('\0') {
        return (StatusCode::BAD_REQUEST, "a path or storage URL is needed").into_response();
    }
    let store = c.storage().clone();
    let path = q.path.clone();
    let listed = tokio::task::spawn_blocking(move || store.list(&path)).await;
    match listed {
        Ok(Ok(files)) => {
            let total = files.len();
            let bytes: u64 = files.iter().map(|f| f.len).sum();
            let files: Vec<Value> = files
                .into_iter()
                .take(STORAGE_LIST_MAX)
                .map(|f| json!({"path": f.path, "len": f.len}))
                .collect();
            Json(json!({
                "path": q.path,
                "files": files,
                "total_files": total,
                "total_bytes": bytes,
                "truncated": total > STORAGE_LIST_MAX,
            }))
            .into_response()
        }
        Ok(Err(
            e @ (dfs_client::DfsError::InvalidPath { .. }
            | dfs_client::DfsError::UnsupportedScheme { .. }),
        )) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Ok(Err(e)) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn attempt_log(
    Ax(c): Ax<Coordinator>,
    Path((id, attempt)): Path<(String, String)>,
) -> Response {
    let (Ok(id), Ok(attempt)) = (id.parse::<JobId>(), attempt.parse::<protocol::AttemptId>())
    else {
        return (StatusCode::BAD_REQUEST, "bad job or attempt id").into_response();
    };
    let (addr, secret) = c.read(|state| {
        let addr = state.attempt_of(id, attempt).map(|a| a.worker_addr);
        (addr, state.job_secret(id))
    });
    let Some(addr) = addr else {
        return (StatusCode::NOT_FOUND, "no such attempt").into_response();
    };
    let log = async {
        let channel = protocol::tls::endpoint(&addr, c.peer_tls())
            .map_err(|e| protocol::error_chain(&e))?
            .connect()
            .await
            .map_err(|e| protocol::error_chain(&e))?;
        let mut w = protocol::pb::worker_service_client::WorkerServiceClient::new(channel);
        w.fetch_log(protocol::pb::FetchLogRequest {
            attempt_id: attempt.0,
            job_id: id.0,
            token: protocol::auth::log_token(&secret, id.0, attempt.0),
        })
        .await
        .map(|r| r.into_inner().data)
        .map_err(|s| s.message().to_string())
    }
    .await;
    match log {
        Ok(data) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            data.to_vec(),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("log not available: {e}")).into_response(),
    }
}

async fn schedules(Ax(c): Ax<Coordinator>) -> Json<Value> {
    let list: Vec<Value> = c
        .schedule_infos()
        .iter()
        .map(crate::json::schedule)
        .collect();
    Json(Value::Array(list))
}

/// Every backfill with its progress, newest first (`quern backfill --list -o json`).
async fn backfills(Ax(c): Ax<Coordinator>) -> Json<Value> {
    let list = c.list_backfills_rpc();
    Json(Value::Array(
        list.iter().rev().map(crate::json::backfill).collect(),
    ))
}

async fn schedule(Ax(c): Ax<Coordinator>, Path(name): Path<String>) -> Response {
    match c.schedule_history(&name) {
        Ok(h) => Json(Value::Array(
            h.entries.iter().map(crate::json::history_entry).collect(),
        ))
        .into_response(),
        Err(s) => (StatusCode::NOT_FOUND, s.to_string()).into_response(),
    }
}

/// Writes a metric's HELP and TYPE lines.

async fn metrics(Ax(c): Ax<Coordinator>) -> Response {
    let now = Instant::now();
    let (list, view, metrics) = c.read(|s| (s.list(now), s.workers_view(now), s.metrics().clone()));
    let mut by_state = std::collections::BTreeMap::<String, u64>::new();
    for s in &list {
        let st = job_json(s)["state"].as_str().unwrap_or("").to_string();
        *by_state.entry(st).or_default() += 1;
    }
    let (mut done, mut running, mut total) = (0u64, 0u64, 0u64);
    let running_state = protocol::pb::JobState::Running as i32;
    for s in list.iter().filter(|s| s.state == running_state) {
        done += u64::from(s.maps_done + s.reduces_done);
        running += u64::from(s.maps_running + s.reduces_running);
        total += u64::from(s.maps_total + s.reduces_total);
    }
    let jobs: Vec<(&str, u64)> = ["running", "succeeded", "failed", "killed"]
        .into_iter()
        .map(|st| (st, by_state.get(st).copied().unwrap_or(0)))
        .collect();
    let pending = total - done - running.min(total - done);
    let workers: Vec<(String, bool, f64, f64)> = view
        .iter()
        .map(|w| {
            (
                w.id.to_string(),
                w.alive,
                w.last_seen_ms as f64 / 1000.0,
                w.max_gap_ms as f64 / 1000.0,
            )
        })
        .collect();
    metrics.set_jobs(
        &jobs,
        &[("done", done), ("running", running), ("pending", pending)],
    );
    metrics.set_workers(&workers);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
