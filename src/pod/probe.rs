//! `bottle-sidecar probe`: the kubelet's startup and readiness check of a sidecar. The admin
//! listeners are bound to the Pod's loopback (nothing outside the Pod may reach them), where a
//! kubelet `httpGet` probe cannot reach, so the kubelet runs this in the container instead.
//!
//! A sidecar is ready when its admin port answers `/readyz` with 2xx and the listeners it
//! forwards to (pipelock) accept connections: the kubelet starts the next container of the Pod
//! only after this passes, so the agent never starts before its doors are open.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, ensure};

/// How long one check may take; the kubelet's own probe timeout is the outer bound.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Passes when `admin` answers `/readyz` with 2xx and every address in `listening` accepts a
/// TCP connection.
pub async fn check(admin: SocketAddr, listening: &[SocketAddr]) -> anyhow::Result<()> {
    for addr in listening {
        tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .with_context(|| format!("{addr}: no answer within {TIMEOUT:?}"))?
            .with_context(|| format!("{addr} is not accepting connections"))?;
    }
    let url = format!("http://{admin}/readyz");
    let status = tokio::time::timeout(TIMEOUT, get_status(&url))
        .await
        .with_context(|| format!("{url}: no answer within {TIMEOUT:?}"))??;
    ensure!(status.is_success(), "{url} answered {status}");
    Ok(())
}

async fn get_status(url: &str) -> anyhow::Result<hyper::StatusCode> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .get(url.parse()?)
        .await
        .with_context(|| format!("asking {url}"))?;
    Ok(resp.status())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pod::core::admin::Admin;

    async fn admin() -> (Arc<Admin>, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = Admin::new(Default::default(), Default::default());
        admin.serve(listener);
        (admin, addr)
    }

    #[tokio::test]
    async fn passes_only_once_the_sidecar_is_ready_and_its_upstream_listens() {
        let (admin, addr) = admin().await;
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = upstream.local_addr().unwrap();

        let starting = check(addr, &[up]).await.unwrap_err();
        assert!(format!("{starting:#}").contains("503"), "{starting:#}");

        admin.set_ready();
        check(addr, &[up]).await.unwrap();

        drop(upstream);
        let closed = check(addr, &[up]).await.unwrap_err();
        assert!(
            format!("{closed:#}").contains("not accepting connections"),
            "{closed:#}"
        );
    }

    #[tokio::test]
    async fn a_dead_admin_port_fails() {
        let addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let err = check(addr, &[]).await.unwrap_err();
        assert!(format!("{err:#}").contains("asking"), "{err:#}");
    }
}
