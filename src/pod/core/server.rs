//! The one server core every sidecar listener runs on (egress, cred-proxy, git-gate and the
//! admin endpoints): binding, accept-error handling, protocol choice, TLS for the connections
//! a sidecar terminates, and the same limits everywhere, set here once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::ProxyBody;

/// What every listener allows a client, over HTTP/1.1 and HTTP/2 alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list); larger gets 431 or a reset.
    pub max_head: usize,
    /// Time a client has to send a whole request head (and the TLS handshake, where one is
    /// terminated); a client that dribbles its headers is cut off after it. It also bounds an
    /// idle keep-alive connection: HTTP/1.1 waiting for its next head, HTTP/2 with no request
    /// open (sent GOAWAY, then closed one more timeout later).
    pub header_read_timeout: Duration,
    /// HTTP/2 ping interval, so a vanished peer does not hold a connection.
    pub h2_keep_alive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    pub h2_keep_alive_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
}

/// The limits of every sidecar listener.
pub const LIMITS: Limits = Limits {
    max_head: 64 * 1024,
    // Agents on loopback send a head in one write; ten seconds is generous and short enough
    // that a slow-header client cannot pile up connections.
    header_read_timeout: Duration::from_secs(10),
    h2_keep_alive_interval: Duration::from_secs(20),
    h2_keep_alive_timeout: Duration::from_secs(20),
    h2_max_concurrent_streams: 256,
};

/// Which protocols a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only, upgrades (CONNECT, WebSocket) included: egress's proxy port.
    Http1,
    /// HTTP/2 only (chosen by ALPN inside TLS).
    Http2,
    /// HTTP/1.1, or HTTP/2 with prior knowledge, told apart by the first bytes (which must
    /// arrive within the header read timeout).
    Detect,
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads just enough of `io` to tell an HTTP/2 preface from anything else: whether it is
/// one, and the bytes read (to be replayed).
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<(bool, Vec<u8>)> {
    let mut got = Vec::with_capacity(H2_PREFACE.len());
    loop {
        let mut b = [0u8; 24];
        let n = io.read(&mut b[..H2_PREFACE.len() - got.len()]).await?;
        got.extend_from_slice(&b[..n]);
        if n == 0 || !H2_PREFACE.starts_with(&got) {
            return Ok((false, got));
        }
        if got.len() == H2_PREFACE.len() {
            return Ok((true, got));
        }
    }
}

/// `io` with `prefix` read back first: the bytes [`sniff`] took.
struct Replay<I> {
    prefix: Vec<u8>,
    at: usize,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Replay<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Replay<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Binds `addr` (`host:port`), saying which address failed.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// The next connection on `listener`. Accept errors (out of file descriptors, a connection
/// reset before it was taken) are logged and retried after a pause instead of spinning.
pub async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// HTTP/1.1 connection settings with `limits`.
fn http1(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The buffer bound makes hyper stop reading a head that never ends; the head size
        // bound makes the limit exact for one that arrives whole.
        .max_buf_size(limits.max_head)
        .max_header_size(limits.max_head)
        .keep_alive(true);
    b
}

/// HTTP/2 connection settings with `limits`.
fn http2(limits: &Limits) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.h2_keep_alive_interval)
        .keep_alive_timeout(limits.h2_keep_alive_timeout)
        .max_concurrent_streams(limits.h2_max_concurrent_streams);
    b
}

/// Serves one connection with `handle` until it ends, upgrades included. How it ended is
/// logged: a client cut off for slow headers at info, anything else at debug.
pub async fn serve_connection<I, H, F>(mut io: I, protocols: Protocols, handle: H)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let (h2, prefix) = match protocols {
        Protocols::Http1 => (false, Vec::new()),
        Protocols::Http2 => (true, Vec::new()),
        Protocols::Detect => {
            match tokio::time::timeout(LIMITS.header_read_timeout, sniff(&mut io)).await {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return tracing::debug!(error = %e, "connection ended early"),
                Err(_) => return tracing::info!("client cut off: no request in time"),
            }
        }
    };
    let io = TokioIo::new(Replay { prefix, at: 0, io });
    let ended = if h2 {
        serve_h2(io, handle).await
    } else {
        let svc = service_fn(move |req| {
            let fut = handle(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        http1(&LIMITS)
            .serve_connection(io, svc)
            .with_upgrades()
            .await
    };
    match ended {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            tracing::info!("client cut off: no complete request head in time")
        }
        Err(e) => {
            tracing::debug!(error = %super::error_chain(&e), "connection ended with an error")
        }
    }
}

/// Requests open on one HTTP/2 connection, and since when none is.
struct Streams {
    open: std::sync::atomic::AtomicUsize,
    idle_since: std::sync::Mutex<tokio::time::Instant>,
}

/// Held while a request is open (its handler running, then its response body streaming).
struct Open(Arc<Streams>);

impl Open {
    fn new(s: &Arc<Streams>) -> Self {
        s.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(s.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        *self.0.idle_since.lock().expect("idle lock") = tokio::time::Instant::now();
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Serves an HTTP/2 connection. hyper has no header read timeout for HTTP/2, so the core
/// gives it the HTTP/1.1 rule: a connection with no request open for the header read timeout
/// (idle, or a client dribbling a header block) is told to go away (GOAWAY), and closed if it
/// has not gone one timeout later.
async fn serve_h2<I, H, F>(io: TokioIo<I>, handle: H) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    use http_body_util::BodyExt;
    let streams = Arc::new(Streams {
        open: Default::default(),
        idle_since: std::sync::Mutex::new(tokio::time::Instant::now()),
    });
    let s = streams.clone();
    let svc = service_fn(move |req| {
        let open = Open::new(&s);
        let fut = handle(req);
        async move {
            let resp = fut.await;
            // The request stays open until its body is dropped (a stream may last).
            Ok::<_, Infallible>(resp.map(|b| {
                b.map_frame(move |f| {
                    let _ = &open;
                    f
                })
                .boxed()
            }))
        }
    });
    let timeout = LIMITS.header_read_timeout;
    let conn = http2(&LIMITS).serve_connection(io, svc);
    tokio::pin!(conn);
    let mut told_to_go: Option<tokio::time::Instant> = None;
    loop {
        let deadline = match told_to_go {
            Some(at) => at + timeout,
            None if streams.open.load(std::sync::atomic::Ordering::Acquire) > 0 => {
                tokio::time::Instant::now() + timeout
            }
            None => *streams.idle_since.lock().expect("idle lock") + timeout,
        };
        tokio::select! {
            ended = conn.as_mut() => return ended,
            () = tokio::time::sleep_until(deadline) => {
                let idle = streams.open.load(std::sync::atomic::Ordering::Acquire) == 0
                    && streams.idle_since.lock().expect("idle lock").elapsed() >= timeout;
                match told_to_go {
                    Some(_) => {
                        tracing::info!("client cut off: HTTP/2 connection did not go away");
                        return Ok(());
                    }
                    None if idle => {
                        tracing::info!("client cut off: HTTP/2 connection without a request in time");
                        conn.as_mut().graceful_shutdown();
                        told_to_go = Some(tokio::time::Instant::now());
                    }
                    None => {}
                }
            }
        }
    }
}

/// The protocol a TLS connection chose by ALPN.
pub fn negotiated<I>(tls: &tokio_rustls::server::TlsStream<I>) -> Protocols {
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        Protocols::Http2
    } else {
        Protocols::Http1
    }
}

/// Accepts connections on `listener` forever and serves each with `handle`.
pub async fn serve<H, F>(listener: TcpListener, protocols: Protocols, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    loop {
        let stream = accept(&listener).await;
        tokio::spawn(serve_connection(stream, protocols, handle.clone()));
    }
}

/// Terminates TLS on `io` with `config`, within the header read timeout (a stalled handshake
/// is a slow client too).
pub async fn accept_tls<I>(
    io: I,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<tokio_rustls::server::TlsStream<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
    tokio::time::timeout(LIMITS.header_read_timeout, handshake)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head of `extra` header bytes, sent over a real loopback connection.
    async fn exchange(protocols: Protocols, extra: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, protocols, |_req| async {
            Response::new(super::super::full("answered\n"))
        }));
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(extra)
        );
        // The server may answer 431 and close before the whole head is written.
        let _ = s.write_all(head.as_bytes()).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    #[tokio::test]
    async fn a_head_over_the_limit_gets_431_under_it_an_answer_on_both_protocol_choices() {
        for p in [Protocols::Http1, Protocols::Detect] {
            assert_eq!(exchange(p, 1024).await, "HTTP/1.1 200 OK", "{p:?}");
            assert_eq!(
                exchange(p, LIMITS.max_head + 1).await,
                "HTTP/1.1 431 Request Header Fields Too Large",
                "{p:?}"
            );
        }
    }
}
