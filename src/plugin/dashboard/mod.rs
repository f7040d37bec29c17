//! `kubectl bottle dashboard`: the access queue, the bottles and their Events on a page at
//! 127.0.0.1, with approve (narrowed, time-boxed) and deny. It acts with the user's own
//! kubeconfig, so it can do only what the user can; what it shows comes from watches.
//!
//! Safety of a local web server: it answers only to `Host: 127.0.0.1:<port>` (no DNS
//! rebinding), every read needs the per-start token in the URL, every write the token in the
//! form body plus a same-origin `Origin`/`Sec-Fetch-Site` (no CSRF), it sends no CORS headers,
//! and its CSP allows only its own nonce'd script and style.

pub mod page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::contract::api::{AccessRequest, Bottle, Verdict};
use crate::contract::config::layout::{SIDECAR_BIN, Sidecar};
use crate::operator::api;
use crate::plugin::access::{decision_patch, parse_for};

/// The biggest form a decision posts.
const MAX_FORM: usize = 16 * 1024;

struct State {
    client: Client,
    user: String,
    namespace: Option<String>,
    token: String,
    origin: String,
    host: String,
    bottles: Store<Bottle>,
    requests: Store<AccessRequest>,
    events: Store<Event>,
    refused: std::sync::Mutex<page::Refused>,
}

/// A fresh random token (hex of 32 bytes).
pub fn token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS has randomness");
    hex::encode(b)
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn store_of<K>(api: Api<K>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    tokio::spawn(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| std::future::ready(())),
    );
    reader
}

/// Serves the dashboard on `127.0.0.1:port` (0: any free port) for `user`, calling
/// `started` with its URL once it listens. Runs until the process ends.
pub async fn serve(
    client: Client,
    user: String,
    namespace: Option<String>,
    port: u16,
    started: impl FnOnce(&str),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let ns = namespace.as_deref();
    let state = Arc::new(State {
        bottles: store_of(api(&client, ns)),
        requests: store_of(api(&client, ns)),
        events: store_of(api(&client, ns)),
        client,
        user,
        token: token(),
        origin: format!("http://{addr}"),
        host: addr.to_string(),
        namespace,
        refused: Default::default(),
    });
    tokio::spawn(follow_refusals(state.clone()));
    // Shown only once every watch has its first list: an empty page is never a false "none".
    let _ = state.bottles.wait_until_ready().await;
    let _ = state.requests.wait_until_ready().await;
    let _ = state.events.wait_until_ready().await;
    started(&format!("{}/?token={}", state.origin, state.token));
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How often each running bottle's egress is asked what it refused.
const REFUSALS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps [`State::refused`] fresh: every running bottle's egress, asked by exec (as the
/// user: without `pods/exec` the column stays empty).
async fn follow_refusals(state: Arc<State>) {
    loop {
        let running: Vec<(String, String, String)> = state
            .bottles
            .state()
            .iter()
            .filter_map(|b| {
                let st = b.status.as_ref()?;
                (st.phase.as_deref() == Some("Running")).then_some(())?;
                Some((b.namespace()?, b.name_any(), st.pod_name.clone()?))
            })
            .collect();
        let asks = running.into_iter().map(|(ns, name, pod)| {
            let pods: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(state.client.clone(), &ns);
            async move {
                let command = [SIDECAR_BIN, "refused"];
                let got =
                    crate::plugin::exec::json(&pods, &pod, Sidecar::Egress.container(), &command)
                        .await;
                ((ns, name), got)
            }
        });
        let answers = futures::future::join_all(asks).await;
        let mut fresh = page::Refused::new();
        for (key, got) in answers {
            if let Err(e) = &got {
                tracing::debug!(bottle = %key.1, error = %e, "refused hosts unknown");
            }
            fresh.insert(key, got);
        }
        *state.refused.lock().expect("refused lock") = fresh;
        tokio::time::sleep(REFUSALS_EVERY).await;
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: String,
    nonce: &str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    for (k, v) in [
        (header::CONTENT_TYPE, content_type.to_string()),
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        (header::X_FRAME_OPTIONS, "DENY".into()),
        // The token is in the URL: it must not leave in a Referer. Not `no-referrer`: under
        // it a browser sends `Origin: null` with the page's own form posts.
        (header::REFERRER_POLICY, "same-origin".into()),
        (header::CACHE_CONTROL, "no-store".into()),
    ] {
        h.insert(
            k,
            HeaderValue::from_str(&v).expect("header values are ASCII"),
        );
    }
    r
}

fn refuse(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        format!("{why}\n"),
        &token(),
    )
}

fn query_token(req: &Request<Incoming>) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // A page another site loads through a name it points at 127.0.0.1 sends its own Host.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if host != Some(state.host.as_str()) {
        return refuse(StatusCode::MISDIRECTED_REQUEST, "wrong Host");
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/" | "/fragment") => {
            if !query_token(&req).is_some_and(|t| same(&t, &state.token)) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "open the URL kubectl bottle dashboard printed",
                );
            }
            let bottles = state.bottles.state();
            let requests = state.requests.state();
            let events: Vec<Arc<Event>> = state
                .events
                .state()
                .into_iter()
                .filter(|e| {
                    e.involved_object.api_version.as_deref()
                        == Some(Bottle::api_version(&()).as_ref())
                })
                .collect();
            let view = page::View {
                user: &state.user,
                namespace: state.namespace.as_deref(),
                bottles: &bottles,
                requests: &requests,
                events: &events,
                refused: &state.refused.lock().expect("refused lock").clone(),
                now: k8s_openapi::jiff::Timestamp::now(),
            };
            let nonce = token();
            let body = if req.uri().path() == "/" {
                page::page(&view, &state.token, &nonce)
            } else {
                page::fragment(&view, &state.token)
            };
            respond(StatusCode::OK, "text/html; charset=utf-8", body, &nonce)
        }
        (Method::POST, "/decide") => decide(state, req).await,
        _ => refuse(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Whether a write comes from the dashboard's own page: a browser says where a request comes
/// from in `Origin` and `Sec-Fetch-Site`; what does not say is no browser (no CSRF risk),
/// and the form's token is still required.
fn same_origin(state: &State, req: &Request<Incoming>) -> bool {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    h("origin").is_none_or(|o| o == state.origin)
        && h("sec-fetch-site").is_none_or(|s| s == "same-origin")
}

async fn decide(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !same_origin(state, &req) {
        return refuse(StatusCode::FORBIDDEN, "cross-origin writes are refused");
    }
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a decision is a form post",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_FORM).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "form too large"),
    };
    let field = |name: &str| {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    if !same(&field("token"), &state.token) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the form's token is missing or wrong",
        );
    }
    let (ns, name) = (field("namespace"), field("name"));
    let verdict = match field("verdict").as_str() {
        "Approve" => Verdict::Approve,
        "Deny" => Verdict::Deny,
        _ => return refuse(StatusCode::BAD_REQUEST, "verdict is Approve or Deny"),
    };
    let reason = Some(field("reason")).filter(|r| !r.is_empty());
    let result = async {
        let api: Api<AccessRequest> = Api::namespaced(state.client.clone(), &ns);
        let (paths, for_seconds) = if verdict == Verdict::Approve {
            let asked = api
                .get(&name)
                .await?
                .spec
                .route
                .map(|r| r.paths)
                .unwrap_or_default();
            let given: Vec<String> = field("paths")
                .split_whitespace()
                .map(String::from)
                .collect();
            // The requested paths as shown are no narrowing.
            let paths = (!given.is_empty() && given != asked).then_some(given);
            let for_seconds = match field("for").as_str() {
                "" => None,
                f => Some(parse_for(f).map_err(anyhow::Error::msg)?),
            };
            (paths, for_seconds)
        } else {
            (None, None)
        };
        let patch = decision_patch(verdict, &state.user, paths, for_seconds, reason);
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let mut r = respond(StatusCode::SEE_OTHER, "text/plain", String::new(), &token());
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&format!("/?token={}", state.token)).expect("hex"),
            );
            r
        }
        Err(e) => {
            let nonce = token();
            let body = format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>not recorded</title></head><body><h1>The decision was not recorded</h1><p role=\"alert\">{}</p><p><a href=\"/?token={}\">Back to the queue</a></p></body></html>",
                page::escape(&format!("{e:#}")),
                state.token
            );
            respond(
                StatusCode::BAD_REQUEST,
                "text/html; charset=utf-8",
                body,
                &nonce,
            )
        }
    }
}
