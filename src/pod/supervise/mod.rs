//! `supervise`: where the agent asks for access. One loopback port serves MCP over
//! streamable HTTP at `/mcp` and the same operations as plain JSON under `/v1/`:
//!
//! ```text
//! GET  /v1/policy                 what the bottle may reach now
//! GET  /v1/requests               this bottle's requests, newest first
//! POST /v1/requests               {"host", "paths": [...], "reason"}: file one
//! GET  /v1/requests/NAME?wait=30  one request, waiting up to 30 s until it is applied or refused
//! ```
//!
//! Asks become AccessRequests in the API server, made as the Bottle's own ServiceAccount
//! (whose token only this container mounts); who may ask and who may decide is the API
//! server's admission policy, so nothing here has to be trusted to refuse.

pub mod api_server;
pub mod mcp;
pub mod ops;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tower_service::Service as _;

use crate::contract::config::supervise::SuperviseConfig;
use crate::pod::core::{ProxyBody, full, server};
use ops::{AccessAsk, OpError, Ops, StatusQuery};

/// Largest JSON body accepted (an ask is a few hundred bytes).
const BODY_LIMIT: usize = 64 << 10;

/// Reads `supervise.yaml`.
pub fn read_config(path: &Path) -> anyhow::Result<SuperviseConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Runs the sidecar until the process is stopped.
pub async fn run(config: impl AsRef<Path>) -> anyhow::Result<()> {
    crate::pod::core::init_crypto();
    let cfg = read_config(config.as_ref())?;
    let listener = server::bind(&cfg.listen).await?;
    tracing::info!(listen = %cfg.listen, bottle = %cfg.bottle, "supervise listening");
    serve(cfg, listener).await
}

/// Serves the tool server and JSON API on `listener`.
pub async fn serve(cfg: SuperviseConfig, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let port = listener.local_addr()?.port();
    let api = api_server::ApiServer::new(&cfg)?;
    let ops = Arc::new(Ops::new(cfg, api));
    tokio::spawn(ops.clone().report_loop());
    let for_mcp = ops.clone();
    // Only loopback names, with this port: a page the agent opens in a browser cannot rebind
    // a name of its own onto this port.
    let hosts = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
    ];
    let mcp = StreamableHttpService::new(
        move || Ok(mcp::Tools::new(for_mcp.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_allowed_hosts(hosts.clone()),
    );
    let hosts = Arc::new(hosts);
    crate::pod::core::serve_http1(listener, move |req: Request<Incoming>| {
        let ops = ops.clone();
        let mut mcp = mcp.clone();
        let hosts = hosts.clone();
        async move {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !hosts.iter().any(|h| h == host) {
                return reply(
                    StatusCode::MISDIRECTED_REQUEST,
                    json!({"error": "only 127.0.0.1 is served here"}),
                );
            }
            if req.uri().path() == "/mcp" || req.uri().path().starts_with("/mcp/") {
                let resp = match mcp.call(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                return resp.map(|b| b.map_err(|never| match never {}).boxed());
            }
            json_api(&ops, req).await
        }
    })
    .await;
    Ok(())
}

async fn json_api(ops: &Ops, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let result = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/healthz" | "/readyz") => Ok(json!({"ok": true})),
        (Method::GET, "/v1/policy") => ops.current_policy().await.map(|p| json!(p)),
        (Method::GET, "/v1/requests") => ops.requests().await.map(Value::from),
        (Method::POST, "/v1/requests") => match read_json::<AccessAsk>(req).await {
            Ok(ask) => ops.request_access(&ask).await,
            Err(e) => Err(e),
        },
        (Method::GET, p) if p.starts_with("/v1/requests/") => {
            let name = p.trim_start_matches("/v1/requests/").to_string();
            match wait_of(&query) {
                Ok(wait_seconds) => {
                    ops.request_status(&StatusQuery { name, wait_seconds })
                        .await
                }
                Err(e) => Err(e),
            }
        }
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"error": "see /v1/policy, /v1/requests, /mcp"}),
            );
        }
    };
    match result {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => reply(e.status(), json!({"error": e.to_string()})),
    }
}

fn wait_of(query: &str) -> Result<u64, OpError> {
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("wait=") {
            return v
                .parse()
                .map_err(|_| OpError::Invalid(format!("wait={v} is not a number of seconds")));
        }
    }
    Ok(0)
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, OpError> {
    let body = http_body_util::Limited::new(req.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| OpError::Invalid(format!("reading the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        OpError::Invalid(format!(
            "the body must be JSON like {{\"host\": \"api.example.com\", \"paths\": [\"/v1/\"], \"reason\": \"...\"}}: {e}"
        ))
    })
}

fn reply(status: StatusCode, v: Value) -> Response<ProxyBody> {
    let mut body = serde_json::to_vec_pretty(&v).expect("JSON values serialise");
    body.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(body)))
        .expect("static response parts are valid")
}
