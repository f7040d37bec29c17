//! The smart-HTTP front: routes `/<remote>.git/...` to `git http-backend` (CGI) over the
//! remote's mirror, refreshing the mirror from upstream at the start of every fetch or push.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Mutex, watch};

use super::{mirror, ssh};
use crate::contract::config::git_gate::GitGateConfig;
use crate::pod::core::admin::Admin;
use crate::pod::core::reload::{self, Loaded, hash_bytes};
use crate::pod::core::server::{self, Protocols};
use crate::pod::core::{BoxError, ProxyBody, deny};

mod push_report;

use push_report::Verdict;

/// Reads and checks a config file.
pub fn read_config(path: &Path) -> anyhow::Result<(GitGateConfig, Vec<u8>)> {
    let (cfg, bytes): (GitGateConfig, _) = reload::read_yaml(path)?;
    for r in &cfg.remotes {
        anyhow::ensure!(
            r.upstream.starts_with("ssh://"),
            "remote {}: upstream must be ssh://",
            r.name
        );
        anyhow::ensure!(
            !r.known_hosts.trim().is_empty(),
            "remote {}: known_hosts is empty",
            r.name
        );
    }
    Ok((cfg, bytes))
}

/// Labels of the push counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushOutcome {
    /// `accepted` or `refused`.
    outcome: &'static str,
}

/// Labels of the push refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedBy {
    /// What refused it (see [`push_report`]'s reasons).
    reason: &'static str,
}

/// git-gate's own counters: pushes by outcome, refusals by reason.
struct PushMetrics {
    pushes: Family<PushOutcome, Counter>,
    refusals: Family<RefusedBy, Counter>,
}

impl PushMetrics {
    fn new(registry: &mut Registry) -> Arc<Self> {
        let pushes = Family::<PushOutcome, Counter>::default();
        let refusals = Family::<RefusedBy, Counter>::default();
        registry.register("pushes", "Pushes, by outcome", pushes.clone());
        registry.register(
            "push_refusals",
            "Refused pushes, by what refused them",
            refusals.clone(),
        );
        Arc::new(Self { pushes, refusals })
    }

    fn record(&self, v: Verdict) {
        let outcome = match v {
            Verdict::Accepted => "accepted",
            Verdict::Refused(reason) => {
                self.refusals.get_or_create(&RefusedBy { reason }).inc();
                "refused"
            }
        };
        self.pushes.get_or_create(&PushOutcome { outcome }).inc();
    }
}

/// Reads receive-pack's answer as it streams to the agent and counts the push when the
/// answer ends (or is dropped part way).
struct Tally {
    report: push_report::PushReport,
    metrics: Arc<PushMetrics>,
    /// Set when git http-backend could not answer at all.
    failed: Option<&'static str>,
}

impl Drop for Tally {
    fn drop(&mut self) {
        let v = self
            .failed
            .map_or_else(|| self.report.verdict(), Verdict::Refused);
        tracing::info!(verdict = ?v, "push");
        self.metrics.record(v);
    }
}

struct Gate {
    config: watch::Receiver<Arc<GitGateConfig>>,
    metrics: Arc<PushMetrics>,
    config_path: PathBuf,
    gitleaks: String,
    syncs: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Shared upstream connections: the refresh before a push opens one, the hook's push
    /// upstream rides it.
    masters: Arc<ssh::Masters>,
}

impl Gate {
    fn hook_cmd(&self, remote: &str) -> anyhow::Result<String> {
        let exe = std::env::current_exe()?;
        Ok(format!(
            "'{}' git-gate-hook --config '{}' --remote '{remote}' --gitleaks '{}'",
            exe.display(),
            self.config_path.display(),
            self.gitleaks
        ))
    }

    async fn sync(&self, cfg: Arc<GitGateConfig>, name: &str) -> anyhow::Result<()> {
        let lock = self
            .syncs
            .lock()
            .await
            .entry(name.to_string())
            .or_default()
            .clone();
        let _held = lock.lock().await;
        let hook = self.hook_cmd(name)?;
        let name = name.to_string();
        let masters = self.masters.clone();
        tokio::task::spawn_blocking(move || {
            let r = cfg
                .remotes
                .iter()
                .find(|r| r.name == name)
                .context("remote vanished")?;
            masters.ensure(&ssh::for_remote(&cfg, r)?);
            mirror::sync(&cfg, r, &hook)
        })
        .await?
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let cfg = self.config.borrow().clone();
        let path = req.uri().path().to_string();
        let Some((name, rest)) = path.trim_start_matches('/').split_once(".git/") else {
            return deny(StatusCode::NOT_FOUND, "git-gate serves /<remote>.git/");
        };
        if !cfg.remotes.iter().any(|r| r.name == name) {
            let declared: Vec<&str> = cfg.remotes.iter().map(|r| r.name.as_str()).collect();
            return deny(
                StatusCode::NOT_FOUND,
                &format!(
                    "no remote named {name:?} (declared: {})",
                    declared.join(", ")
                ),
            );
        }
        let push = rest == "git-receive-pack" && req.method() == Method::POST;
        if rest == "info/refs" {
            // Fresh upstream refs before every fetch or push, so a push is compared (and
            // scanned) against what upstream really has.
            if let Err(e) = self.sync(cfg.clone(), name).await {
                if req.uri().query() == Some("service=git-receive-pack") {
                    self.metrics
                        .record(Verdict::Refused(push_report::UPSTREAM_UNREACHABLE));
                }
                tracing::error!(
                    remote = name,
                    error = format!("{e:#}"),
                    "upstream sync failed"
                );
                return deny(
                    StatusCode::BAD_GATEWAY,
                    &format!("upstream of {name} unreachable: {e:#}"),
                );
            }
        }
        let mut tally = push.then(|| Tally {
            report: push_report::PushReport::default(),
            metrics: self.metrics.clone(),
            failed: None,
        });
        match self.cgi(&cfg, req, &mut tally).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(t) = tally.as_mut() {
                    t.failed = Some(push_report::BACKEND);
                }
                tracing::error!(
                    remote = name,
                    error = format!("{e:#}"),
                    "git http-backend failed"
                );
                deny(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed")
            }
        }
    }

    async fn cgi(
        &self,
        cfg: &GitGateConfig,
        req: Request<Incoming>,
        tally: &mut Option<Tally>,
    ) -> anyhow::Result<Response<ProxyBody>> {
        let (parts, body) = req.into_parts();
        let header = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let mut child = Command::new("git")
            .arg("http-backend")
            .env(
                "GIT_PROJECT_ROOT",
                Path::new(&cfg.state_dir).join("mirrors"),
            )
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", parts.uri.path())
            .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("CONTENT_TYPE", header("content-type"))
            .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
            .env("GIT_PROTOCOL", header("git-protocol"))
            .env("REMOTE_USER", "agent")
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting git http-backend")?;
        let mut stdin = child.stdin.take().expect("piped");
        tokio::spawn(async move {
            let mut body = body.into_data_stream();
            while let Ok(Some(chunk)) = body.try_next().await {
                if stdin.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped");
        tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            if !s.trim().is_empty() {
                tracing::info!(output = s.trim(), "git http-backend");
            }
        });
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut builder = Response::builder();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).await? == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').context("malformed CGI header")?;
            if k.eq_ignore_ascii_case("status") {
                let code: u16 = v.trim().split(' ').next().unwrap_or("500").parse()?;
                builder = builder.status(code);
            } else {
                builder = builder.header(k.trim(), v.trim());
            }
        }
        let mut tally = tally.take();
        let stream = tokio_util::io::ReaderStream::new(out)
            .map_ok(move |chunk| {
                if let Some(t) = tally.as_mut() {
                    t.report.feed(&chunk);
                }
                Frame::data(chunk)
            })
            .map_err(|e| Box::new(e) as BoxError);
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(builder.body(BodyExt::boxed(StreamBody::new(stream)))?)
    }
}

/// Runs git-gate until the process is stopped.
pub async fn run(config_path: PathBuf, gitleaks: String) -> anyhow::Result<()> {
    let (cfg, _) = read_config(&config_path)?;
    let path = config_path.clone();
    let load = move || -> anyhow::Result<Loaded<GitGateConfig>> {
        let (cfg, bytes) = read_config(&path)?;
        let h = hash_bytes(&[&bytes]);
        Ok(Loaded {
            value: cfg,
            config_hash: h.clone(),
            change_key: h,
        })
    };
    let dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect::<Vec<_>>();
    let live = reload::start(load, move |_| dir.clone(), Duration::from_secs(2))?;
    std::fs::create_dir_all(Path::new(&cfg.state_dir).join("mirrors"))
        .context("creating the mirror directory")?;
    let mut registry = Registry::with_prefix("git_gate");
    let metrics = PushMetrics::new(&mut registry);
    let gate = Arc::new(Gate {
        config: live.current,
        metrics,
        config_path,
        gitleaks,
        syncs: Mutex::default(),
        masters: Arc::default(),
    });
    let masters = gate.masters.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let m = masters.clone();
            let _ = tokio::task::spawn_blocking(move || m.close_idle(ssh::MASTER_IDLE)).await;
        }
    });
    let admin = Admin::start(&cfg.admin_listen, registry, live.status.clone()).await?;
    let listener = server::bind(&cfg.listen).await?;
    tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, remotes = cfg.remotes.len(), "git-gate listening");
    admin.set_ready();
    server::serve(listener, Protocols::Detect, move |req| {
        gate.clone().handle(req)
    })
    .await;
    Ok(())
}
