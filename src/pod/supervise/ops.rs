//! The three things the agent can do here, answered the same over MCP and plain HTTP: read
//! what it may reach, ask for more, and learn what became of an ask.

use std::time::Duration;

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api_server::{ApiServer, CallError};
use crate::contract::config::egress::EgressConfig;
use crate::contract::config::supervise::SuperviseConfig;
use crate::pod::core::refused_hosts::RefusedHost;
use crate::pod::core::reload::{ReloadStatus, hash_bytes};

/// Longest a status call waits for a decision.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// How often a waiting status call asks again.
const POLL: Duration = Duration::from_secs(1);

/// An ask, as the agent writes it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessAsk {
    /// The exact hostname (or, with no paths, `*.domain` for a whole domain).
    pub host: String,
    /// Path prefixes to reach on the host, each starting with `/`. Leave empty to ask for
    /// the whole host.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Why the task needs it: the person deciding reads this.
    pub reason: String,
}

/// Which request to report on.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// The request's name, as `request_access` returned it.
    pub name: String,
    /// Seconds to wait for a decision while the request is pending (0 to 300).
    #[serde(default)]
    pub wait_seconds: u64,
}

/// What the bottle may reach now.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// Hosts reachable on every path (`*.domain` covers subdomains).
    pub allow: Vec<String>,
    /// Hosts tunnelled without inspection.
    pub passthrough: Vec<String>,
    /// Hosts reachable on some paths only.
    pub routes: Vec<RouteView>,
    /// Hosts (and paths) egress refused lately for want of a route, newest first: what an
    /// access request could open.
    pub recently_refused: Vec<RefusedHost>,
}

/// One host and its allowed path prefixes (none: every path).
#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    /// The host.
    pub host: String,
    /// Allowed path prefixes.
    pub paths: Vec<String>,
}

/// Why an operation failed: said to the agent as it is.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The ask itself is malformed; nothing was sent.
    #[error("{0}")]
    Invalid(String),
    /// No such request for this bottle.
    #[error("no access request {0} for this bottle")]
    NotFound(String),
    /// The API server said no, or could not be reached.
    #[error(transparent)]
    Api(#[from] CallError),
    /// The mounted config could not be read.
    #[error("{0:#}")]
    Config(anyhow::Error),
}

impl OpError {
    /// The HTTP status the JSON API answers with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            OpError::Invalid(_) => S::BAD_REQUEST,
            OpError::NotFound(_) => S::NOT_FOUND,
            OpError::Api(CallError::Refused { status, .. }) => *status,
            OpError::Api(CallError::Unreachable(_)) => S::BAD_GATEWAY,
            OpError::Config(_) => S::INTERNAL_SERVER_ERROR,
        }
    }
}

/// How often the requests this sidecar follows are checked for a grant now in force.
const REPORT_EVERY: Duration = Duration::from_secs(3);

/// The operations, bound to one Bottle.
pub struct Ops {
    cfg: SuperviseConfig,
    api: ApiServer,
    /// Requests filed or asked about here that may still become Applied.
    followed: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Ops {
    /// Ops for the Bottle `cfg` names, talking to the API server through `api`.
    pub fn new(cfg: SuperviseConfig, api: ApiServer) -> Self {
        Self {
            cfg,
            api,
            followed: Default::default(),
        }
    }

    fn follow(&self, name: &str) {
        self.followed
            .lock()
            .expect("followed lock")
            .insert(name.to_string());
    }

    /// Reports, until the process ends, each followed request whose grant egress now runs
    /// (so an approval becomes Applied whether or not the agent is waiting on it).
    pub async fn report_loop(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(REPORT_EVERY).await;
            let names: Vec<String> = self
                .followed
                .lock()
                .expect("followed lock")
                .iter()
                .cloned()
                .collect();
            for name in names {
                let done = match self.api.get(&name).await {
                    Ok(stored) => {
                        let v = self.settle(view(&stored)).await;
                        !matches!(v["phase"].as_str(), Some("Pending" | "Approved"))
                    }
                    Err(CallError::Refused { status, .. }) => status == http::StatusCode::NOT_FOUND,
                    Err(CallError::Unreachable(_)) => false,
                };
                if done {
                    self.followed.lock().expect("followed lock").remove(&name);
                }
            }
        }
    }

    /// An approved request whose grant egress runs: reported (`status.appliedAt`, once) and
    /// shown `Applied`; `inForce` tells either way.
    async fn settle(&self, mut v: Value) -> Value {
        if v["phase"] == "Applied" {
            v["inForce"] = true.into();
        }
        if v["phase"] != "Approved" {
            return v;
        }
        // Approved is the person's word; Applied is egress's: the grant is in the config
        // egress runs, so a retry now passes it.
        let in_force = self.in_force(&v).await;
        v["inForce"] = in_force.into();
        if !in_force {
            return v;
        }
        v["phase"] = "Applied".into();
        if v.get("appliedAt").is_none()
            && let Some(name) = v["name"].as_str()
        {
            match self.api.report_applied(name, &now_rfc3339()).await {
                Ok(stored) => v["appliedAt"] = stored["status"]["appliedAt"].clone(),
                Err(e) => {
                    tracing::warn!(request = name, error = %e, "could not report the grant in force")
                }
            }
        }
        v
    }

    /// What the bottle may reach now, from egress's mounted config (the file the kubelet
    /// updates when the ConfigMap changes, so an approval shows here once it is in force).
    pub async fn current_policy(&self) -> Result<PolicyView, OpError> {
        let (_, egress) = self.egress().await?;
        let mut view = policy_view(&egress);
        view.recently_refused = self.refused().await;
        Ok(view)
    }

    /// egress's mounted config: its bytes (whose hash egress reports in force) and parsed.
    async fn egress(&self) -> Result<(Vec<u8>, EgressConfig), OpError> {
        let bytes = tokio::fs::read(&self.cfg.egress_config)
            .await
            .map_err(|e| OpError::Config(anyhow::anyhow!("reading egress's config: {e}")))?;
        let egress = serde_norway::from_slice(&bytes)
            .map_err(|e| OpError::Config(anyhow::anyhow!("egress's config: {e}")))?;
        Ok((bytes, egress))
    }

    /// egress's `/refused`; empty (and logged) when egress does not answer: the policy is
    /// still worth reading.
    async fn refused(&self) -> Vec<RefusedHost> {
        let url = format!("http://{}/refused", self.cfg.egress_admin);
        match crate::pod::core::admin::get(&url).await {
            Ok(body) => serde_json::from_slice(&body).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "egress's /refused is not a host list");
                Vec::new()
            }),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "egress's /refused did not answer");
                Vec::new()
            }
        }
    }

    /// Files an AccessRequest for this Bottle; returns it as the API server stored it.
    pub async fn request_access(&self, ask: &AccessAsk) -> Result<Value, OpError> {
        let object = request_object(&self.cfg, ask)?;
        let stored = self.api.create(object).await?;
        let v = view(&stored);
        if let Some(name) = v["name"].as_str() {
            self.follow(name);
        }
        Ok(v)
    }

    /// The request `q.name` of this Bottle, after waiting up to `q.wait_seconds` (capped at
    /// [`MAX_WAIT`]) while it is pending, or approved but not yet in force.
    pub async fn request_status(&self, q: &StatusQuery) -> Result<Value, OpError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(q.wait_seconds).min(MAX_WAIT);
        loop {
            let stored = match self.api.get(&q.name).await {
                Err(CallError::Refused { status, .. }) if status == http::StatusCode::NOT_FOUND => {
                    return Err(OpError::NotFound(q.name.clone()));
                }
                other => other?,
            };
            if stored["spec"]["bottle"] != self.cfg.bottle.as_str() {
                return Err(OpError::NotFound(q.name.clone()));
            }
            self.follow(&q.name);
            let v = self.settle(view(&stored)).await;
            let settled = v["phase"] != "Pending" && v["phase"] != "Approved";
            if settled || tokio::time::Instant::now() + POLL > deadline {
                return Ok(v);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the grant `v` describes is in the config egress runs: the mounted file carries
    /// it, and egress reports that file's version in force.
    async fn in_force(&self, v: &Value) -> bool {
        let Ok((bytes, egress)) = self.egress().await else {
            return false;
        };
        if !carries(&egress, v) {
            return false;
        }
        let url = format!("http://{}/status", self.cfg.egress_admin);
        let running = crate::pod::core::admin::get(&url)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<ReloadStatus>(&b).ok());
        running.is_some_and(|r| r.config_hash == hash_bytes(&[&bytes]))
    }

    /// Every request of this Bottle, newest first.
    pub async fn requests(&self) -> Result<Vec<Value>, OpError> {
        let mut all: Vec<Value> = self
            .api
            .list_for(&self.cfg.bottle)
            .await?
            .iter()
            .map(view)
            .collect();
        all.sort_by(|a, b| b["created"].as_str().cmp(&a["created"].as_str()));
        Ok(all)
    }
}

/// Now, as the API server writes times (RFC 3339, whole seconds, UTC).
fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// egress's config as the agent should read it: hosts and paths, never where a credential
/// comes from.
pub fn policy_view(egress: &EgressConfig) -> PolicyView {
    let routed = |h: &String| egress.routes.iter().any(|r| r.host.as_str() == h);
    PolicyView {
        // A host with routes is held to their paths, though pipelock's list names it too.
        allow: egress
            .allow
            .iter()
            .map(ToString::to_string)
            .filter(|h| !routed(h))
            .collect(),
        passthrough: egress.passthrough.iter().map(ToString::to_string).collect(),
        routes: egress
            .routes
            .iter()
            .map(|r| RouteView {
                host: r.host.to_string(),
                paths: r.paths.clone(),
            })
            .collect(),
        recently_refused: Vec::new(),
    }
}

/// Whether egress's config `egress` lets through what the request view `v` was granted:
/// each granted (or requested) path under a route of its host, or for a whole host, the
/// host allowed or routed on every path.
pub fn carries(egress: &EgressConfig, v: &Value) -> bool {
    let Some(host) = v["host"].as_str() else {
        return false;
    };
    let strings = |x: &Value| -> Vec<String> {
        x.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect()
    };
    let granted = match strings(&v["grantedPaths"]) {
        g if !g.is_empty() => g,
        _ => strings(&v["paths"]),
    };
    let route = egress.routes.iter().find(|r| r.host.as_str() == host);
    if granted.is_empty() {
        return route.is_some_and(|r| r.paths.is_empty())
            || (route.is_none() && egress.allow.iter().any(|a| a.to_string() == host));
    }
    route.is_some_and(|r| {
        r.paths.is_empty() || granted.iter().all(|g| r.paths.iter().any(|p| p == g))
    })
}

/// The AccessRequest `ask` becomes. The shape is checked here so the agent hears about a
/// typo at once; whether the host may be asked for at all is the operator's call.
pub fn request_object(cfg: &SuperviseConfig, ask: &AccessAsk) -> Result<Value, OpError> {
    let host = ask.host.trim().to_ascii_lowercase();
    if host.is_empty() || host.contains(['/', ':', ' ']) {
        return Err(OpError::Invalid(format!(
            "host {:?} must be a bare hostname such as api.example.com (no scheme, port or path)",
            ask.host
        )));
    }
    if ask.reason.trim().is_empty() {
        return Err(OpError::Invalid(
            "say why the task needs it: the person deciding reads the reason".into(),
        ));
    }
    if let Some(p) = ask.paths.iter().find(|p| !p.starts_with('/')) {
        return Err(OpError::Invalid(format!("path {p:?} must start with '/'")));
    }
    let mut spec = json!({
        "bottle": cfg.bottle,
        "requestedBy": cfg.requested_by,
        "reason": ask.reason.trim(),
    });
    if ask.paths.is_empty() {
        spec["allowHost"] = host.into();
    } else {
        spec["route"] = json!({ "host": host, "paths": ask.paths });
    }
    Ok(json!({
        "metadata": {
            "generateName": format!("{}-", cfg.bottle),
            "namespace": cfg.namespace,
        },
        "spec": spec,
    }))
}

/// A stored AccessRequest as the agent reads it.
pub fn view(stored: &Value) -> Value {
    let spec = &stored["spec"];
    let status = &stored["status"];
    let (host, paths) = match spec["route"].as_object() {
        Some(r) => (r["host"].clone(), r["paths"].clone()),
        None => (spec["allowHost"].clone(), json!([])),
    };
    let decision = &spec["decision"];
    let mut out = json!({
        "name": stored["metadata"]["name"],
        "created": stored["metadata"]["creationTimestamp"],
        // The operator has not looked at it yet: it waits all the same.
        "phase": status["phase"].as_str().unwrap_or("Pending"),
        "host": host,
        "paths": paths,
        "reason": spec["reason"],
    });
    for (key, value) in [
        ("decidedBy", &status["decidedBy"]),
        ("grantedPaths", &decision["paths"]),
        ("approverNote", &decision["reason"]),
        ("expiresAt", &status["expiresAt"]),
        ("configVersion", &status["configVersion"]),
        ("appliedAt", &status["appliedAt"]),
        ("message", &status["message"]),
    ] {
        if !value.is_null() {
            out[key] = value.clone();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SuperviseConfig {
        SuperviseConfig {
            listen: "127.0.0.1:0".into(),
            namespace: "team".into(),
            bottle: "b".into(),
            requested_by: "system:serviceaccount:team:b-supervise".into(),
            api_server: "https://127.0.0.1:1".into(),
            api_server_name: "kubernetes.default.svc".into(),
            token_file: "t".into(),
            ca_file: "c".into(),
            egress_config: "e".into(),
            egress_admin: "a".into(),
        }
    }

    fn ask(host: &str, paths: &[&str], reason: &str) -> AccessAsk {
        AccessAsk {
            host: host.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            reason: reason.into(),
        }
    }

    #[test]
    fn paths_make_a_route_and_none_make_a_whole_host_ask() {
        let r = request_object(&cfg(), &ask("Api.Example.com", &["/v1/"], " fetch docs ")).unwrap();
        assert_eq!(
            r["spec"]["route"],
            json!({"host": "api.example.com", "paths": ["/v1/"]})
        );
        assert_eq!(
            r["spec"]["requestedBy"],
            "system:serviceaccount:team:b-supervise"
        );
        assert_eq!(r["spec"]["reason"], "fetch docs");
        assert_eq!(r["metadata"]["generateName"], "b-");
        assert!(r["spec"].get("allowHost").is_none());
        let h = request_object(&cfg(), &ask("pypi.org", &[], "install")).unwrap();
        assert_eq!(h["spec"]["allowHost"], "pypi.org");
        assert!(h["spec"].get("route").is_none());
    }

    #[test]
    fn a_grant_is_carried_only_when_egress_routes_every_granted_path() {
        let egress: EgressConfig = serde_norway::from_str(
            "listen: a\nadminListen: b\ncaCert: c\ncaKey: d\nports: [443]\n\
             allow: [pypi.org, api.example.com]\n\
             routes: [{host: api.example.com, paths: [/v1/search/, /v2/]}, {host: open.example.com}]\n",
        )
        .unwrap();
        let v = |host: &str, paths: Value, granted: Value| json!({"host": host, "paths": paths, "grantedPaths": granted});
        // Narrowed: the granted paths count, not the requested ones.
        assert!(carries(
            &egress,
            &v("api.example.com", json!(["/v1/"]), json!(["/v1/search/"]))
        ));
        assert!(!carries(
            &egress,
            &v("api.example.com", json!(["/v1/"]), Value::Null)
        ));
        assert!(carries(
            &egress,
            &v("api.example.com", json!(["/v2/"]), Value::Null)
        ));
        // A whole host: allowed with no route, or routed on every path.
        assert!(carries(&egress, &v("pypi.org", json!([]), Value::Null)));
        assert!(carries(
            &egress,
            &v("open.example.com", json!([]), Value::Null)
        ));
        // In pipelock's list but held to its routes' paths: not a whole-host grant.
        assert!(!carries(
            &egress,
            &v("api.example.com", json!([]), Value::Null)
        ));
        assert!(!carries(
            &egress,
            &v("new.example.com", json!(["/"]), Value::Null)
        ));
    }

    #[test]
    fn malformed_asks_are_refused_before_anything_is_sent() {
        for bad in [
            ask("https://x.com", &[], "r"),
            ask("x.com:443", &[], "r"),
            ask("", &[], "r"),
            ask("x.com", &["v1"], "r"),
            ask("x.com", &[], "  "),
        ] {
            assert!(
                matches!(request_object(&cfg(), &bad), Err(OpError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_request_not_yet_reviewed_reads_as_pending_and_a_decision_shows() {
        let fresh =
            json!({"metadata": {"name": "b-x"}, "spec": {"allowHost": "pypi.org", "reason": "r"}});
        assert_eq!(view(&fresh)["phase"], "Pending");
        assert!(view(&fresh).get("decidedBy").is_none());
        let decided = json!({"metadata": {"name": "b-y"},
            "spec": {"route": {"host": "h", "paths": ["/a/"]}, "reason": "r",
                     "decision": {"verdict": "Approve", "decidedBy": "alice", "paths": ["/a/b/"]}},
            "status": {"phase": "Approved", "decidedBy": "alice", "configVersion": "abc"}});
        let v = view(&decided);
        assert_eq!(v["phase"], "Approved");
        assert_eq!(v["grantedPaths"], json!(["/a/b/"]));
        assert_eq!(v["paths"], json!(["/a/"]));
        assert_eq!(v["configVersion"], "abc");
    }
}
