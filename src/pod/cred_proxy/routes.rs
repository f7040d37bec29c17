//! Pure routing of cred-proxy: path → upstream URL and credential, and the git-push refusal.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use http::Uri;

use crate::contract::config::cred_proxy::CredProxyConfig;
use crate::contract::config::path::{AmbiguousPath, normalize};
use crate::pod::core::headers::Injection;

/// Why cred-proxy refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No route has this name.
    UnknownRoute(String),
    /// Pushes go through git-gate, where they are secret-scanned.
    GitPush,
    /// The path is ambiguous.
    Path(AmbiguousPath),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownRoute(n) => write!(f, "no cred-proxy route named {n:?}"),
            Refusal::GitPush => {
                f.write_str("git push is not allowed through cred-proxy; push to a remote declared in spec.git.remotes (served by git-gate, which scans pushes)")
            }
            Refusal::Path(d) => write!(f, "{d}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Route {
    base: Uri,
    inject: Injection,
}

/// The compiled route table.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: HashMap<String, Route>,
    token_files: Vec<PathBuf>,
}

/// True for git smart-HTTP push: the receive-pack service or its ref advertisement, as any
/// upstream might read the (normalised) path: `;params` dropped (Tomcat, Jetty: Gerrit,
/// Bitbucket Server), a trailing slash ignored, case ignored (IIS), the query decoded.
pub fn is_git_push(path: &str, query: Option<&str>) -> bool {
    let mut names = path
        .trim_end_matches('/')
        .rsplit('/')
        .map(|s| s.split(';').next().unwrap_or_default());
    let is = |s: Option<&str>, name: &str| s.is_some_and(|s| s.eq_ignore_ascii_case(name));
    let last = names.next();
    let wants_push = query.is_some_and(|q| {
        q.split('&').any(|kv| {
            percent_encoding::percent_decode_str(kv)
                .decode_utf8_lossy()
                .eq_ignore_ascii_case("service=git-receive-pack")
        })
    });
    is(last, "git-receive-pack") || (is(last, "refs") && is(names.next(), "info") && wants_push)
}

impl Routes {
    /// Compiles and validates a config: URLs parse as https, token files read.
    pub fn compile(cfg: &CredProxyConfig) -> anyhow::Result<Self> {
        let mut routes = HashMap::new();
        let mut token_files = Vec::new();
        for r in &cfg.routes {
            // Checked when the file was read (HttpsBase).
            let base: Uri = r.upstream.uri().clone();
            token_files.push(PathBuf::from(&r.auth.token_file));
            let inject = Injection::load(&r.auth).with_context(|| format!("route {}", r.name))?;
            anyhow::ensure!(
                routes
                    .insert(r.name.clone(), Route { base, inject })
                    .is_none(),
                "route {} is declared twice",
                r.name
            );
        }
        Ok(Self {
            routes,
            token_files,
        })
    }

    /// Token files the routes read (watched for rotation).
    pub fn token_files(&self) -> &[PathBuf] {
        &self.token_files
    }

    /// Maps a request path and query to the upstream URL and credential.
    pub fn resolve(&self, path: &str, query: Option<&str>) -> Result<(Uri, &Injection), Refusal> {
        let (name, rest) = match path.trim_start_matches('/').split_once('/') {
            Some((n, r)) => (n, format!("/{r}")),
            None => (path.trim_start_matches('/'), "/".to_string()),
        };
        let route = self
            .routes
            .get(name)
            .ok_or_else(|| Refusal::UnknownRoute(name.to_string()))?;
        let rest = normalize(&rest).map_err(Refusal::Path)?;
        if is_git_push(&rest, query) {
            return Err(Refusal::GitPush);
        }
        let base_path = route.base.path().trim_end_matches('/');
        let q = query.map(|q| format!("?{q}")).unwrap_or_default();
        let authority = route.base.authority().expect("checked at compile").as_str();
        let uri = format!("https://{authority}{base_path}{rest}{q}")
            .parse()
            .map_err(|_| Refusal::Path(AmbiguousPath(rest)))?;
        Ok((uri, &route.inject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::config::HeaderInjection;
    use crate::contract::config::cred_proxy::CredRoute;

    fn routes() -> (Routes, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("t");
        std::fs::write(&token, "k").unwrap();
        let cfg = CredProxyConfig {
            listen: "127.0.0.1:0".into(),
            admin_listen: "127.0.0.1:0".into(),
            upstream_proxy: None,
            ca_cert: String::new(),
            routes: vec![CredRoute {
                name: "gh".into(),
                upstream: "https://api.example.com/v3/"
                    .to_string()
                    .try_into()
                    .unwrap(),
                auth: HeaderInjection {
                    header: "authorization".into(),
                    scheme: Some("token".into()),
                    token_file: token.display().to_string(),
                },
            }],
        };
        (Routes::compile(&cfg).unwrap(), dir)
    }

    #[test]
    fn paths_map_under_the_upstream_base() {
        let (r, _d) = routes();
        let (uri, _) = r.resolve("/gh/repos/a/b", Some("page=2")).unwrap();
        assert_eq!(
            uri.to_string(),
            "https://api.example.com/v3/repos/a/b?page=2"
        );
        assert_eq!(
            r.resolve("/gh", None).unwrap().0.to_string(),
            "https://api.example.com/v3/"
        );
        assert_eq!(
            r.resolve("/other/x", None).unwrap_err(),
            Refusal::UnknownRoute("other".into())
        );
        assert!(matches!(
            r.resolve("/gh/%2e%2e/%2e%2e/x", None),
            Err(Refusal::Path(_))
        ));
    }

    #[test]
    fn git_push_is_refused_and_fetch_is_not() {
        let (r, _d) = routes();
        assert_eq!(
            r.resolve("/gh/o/r.git/git-receive-pack", None).unwrap_err(),
            Refusal::GitPush
        );
        assert_eq!(
            r.resolve("/gh/o/r.git/info/refs", Some("service=git-receive-pack"))
                .unwrap_err(),
            Refusal::GitPush
        );
        assert!(
            r.resolve("/gh/o/r.git/info/refs", Some("service=git-upload-pack"))
                .is_ok()
        );
        assert!(r.resolve("/gh/o/r.git/git-upload-pack", None).is_ok());
        // Spellings a server that drops `;params`, ignores a trailing slash or case, or
        // decodes the query still runs as a push. Found by tests/properties.rs.
        for (path, query) in [
            ("/gh/o/r.git/git-receive-pack;x", None),
            ("/gh/o/r.git/git-receive-pack/", None),
            ("/gh/o/r.git/GIT-Receive-Pack", None),
            ("/gh/o/r.git/info;x/refs", Some("service=git-receive-pack")),
            ("/gh/o/r.git/info/refs", Some("service=git%2Dreceive-pack")),
        ] {
            assert_eq!(
                r.resolve(path, query).unwrap_err(),
                Refusal::GitPush,
                "{path}"
            );
        }
    }
}
