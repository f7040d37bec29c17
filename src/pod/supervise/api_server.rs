//! The one outbound connection supervise makes: HTTPS to the API server, as the Bottle's
//! ServiceAccount, for AccessRequests alone. A few REST calls over hyper, not a Kubernetes
//! client: the sidecar binary links none (see ARCHITECTURE.md).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::contract::config::supervise::SuperviseConfig;
use crate::pod::core::upstream::add_ca_files;

/// Longest wait for one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read (a list of one Bottle's requests is far smaller).
const ANSWER_LIMIT: usize = 4 << 20;

const GROUP_VERSION: &str = "bottle-operator.dev/v1alpha1";

/// Why a call failed, in words the agent can act on.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The API server answered with an error status; `message` is its own (an admission
    /// policy's or a CRD rule's words).
    #[error("the API server refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The Status object's message.
        message: String,
    },
    /// No answer: unreachable, TLS, timeout, unreadable token.
    #[error("the API server could not be asked: {0:#}")]
    Unreachable(anyhow::Error),
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A client for the Bottle's AccessRequests.
#[derive(Clone)]
pub struct ApiServer {
    base: String,
    namespace: String,
    token_file: String,
    client: Client<Https, Full<Bytes>>,
}

impl ApiServer {
    /// Trusts only the CA in `ca_file` and checks the server's certificate against
    /// `api_server_name`, whatever address it is reached at.
    pub fn new(cfg: &SuperviseConfig) -> anyhow::Result<Self> {
        // The cluster's CA alone: no system root vouches for an API server.
        let mut roots = RootCertStore::empty();
        add_ca_files(&mut roots, &[&cfg.ca_file])?;
        anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", cfg.ca_file);
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(cfg.api_server_name.clone())
            .with_context(|| format!("{:?} is not a server name", cfg.api_server_name))?;
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(name))
            .enable_http1()
            .build();
        Ok(Self {
            base: cfg.api_server.trim_end_matches('/').to_string(),
            namespace: cfg.namespace.clone(),
            token_file: cfg.token_file.clone(),
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    fn collection(&self) -> String {
        format!(
            "{}/apis/{GROUP_VERSION}/namespaces/{}/accessrequests",
            self.base, self.namespace
        )
    }

    /// Creates an AccessRequest (the object without apiVersion/kind); returns it as stored.
    pub async fn create(&self, mut object: Value) -> Result<Value, CallError> {
        object["apiVersion"] = GROUP_VERSION.into();
        object["kind"] = "AccessRequest".into();
        self.call(Method::POST, self.collection(), Some(object))
            .await
    }

    /// Reports the grant of request `name` in force: `status.appliedAt`, the one status
    /// field this account may write (the admission policy refuses anything else).
    pub async fn report_applied(&self, name: &str, at: &str) -> Result<Value, CallError> {
        let url = format!("{}/{}/status", self.collection(), encode(name));
        let body = serde_json::json!({"status": {"appliedAt": at}});
        self.call_as(
            Method::PATCH,
            url,
            Some(body),
            "application/merge-patch+json",
        )
        .await
    }

    /// One AccessRequest by name.
    pub async fn get(&self, name: &str) -> Result<Value, CallError> {
        let url = format!("{}/{}", self.collection(), encode(name));
        self.call(Method::GET, url, None).await
    }

    /// This namespace's AccessRequests for `bottle` (the list is filtered here: a field
    /// selector on a custom resource's spec is not served).
    pub async fn list_for(&self, bottle: &str) -> Result<Vec<Value>, CallError> {
        let list = self.call(Method::GET, self.collection(), None).await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["spec"]["bottle"] == bottle)
            .cloned()
            .collect())
    }

    async fn call(
        &self,
        method: Method,
        url: String,
        body: Option<Value>,
    ) -> Result<Value, CallError> {
        self.call_as(method, url, body, "application/json").await
    }

    async fn call_as(
        &self,
        method: Method,
        url: String,
        body: Option<Value>,
        content_type: &str,
    ) -> Result<Value, CallError> {
        // Re-read each time: the kubelet rotates a projected token in place.
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .with_context(|| format!("reading the ServiceAccount token {}", self.token_file))
            .map_err(CallError::Unreachable)?;
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::USER_AGENT, "bottle-supervise")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| CallError::Unreachable(e.into()))?;
        let answer = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, answer)
            .await
            .map_err(|_| {
                CallError::Unreachable(anyhow::anyhow!("no answer within {CALL_TIMEOUT:?}"))
            })?
            .map_err(CallError::Unreachable)?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(CallError::Refused { status, message })
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}
