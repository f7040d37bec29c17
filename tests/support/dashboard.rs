//! `kubectl bottle dashboard` as a process, and a real headless Chromium driven over the
//! DevTools protocol (Debian's `chromium-headless-shell`, which tests/tools/install.sh
//! installs). Self-contained: the e2e suite includes it by path as well.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::control_plane::free_port;

const WAIT: Duration = Duration::from_secs(60);

/// The dashboard as a process, and the URL it printed.
pub struct Dashboard {
    child: Child,
    /// The URL with its token.
    pub url: String,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dashboard {
    /// `kubectl bottle -n NS dashboard` with `kubeconfig`, once it has printed its URL.
    pub fn start(kubeconfig: &Path, ns: &str) -> Self {
        dashboard(kubeconfig, ns)
    }
}

fn dashboard(kubeconfig: &Path, ns: &str) -> Dashboard {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-bottle"))
        .env("KUBECONFIG", kubeconfig)
        .args(["-n", ns, "dashboard"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .last()
        .filter(|u| u.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    Dashboard { child, url }
}

/// A DevTools session with one page of a headless Chromium.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium on about:blank and attaches to its page.
    pub async fn start() -> Self {
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium-headless-shell")
            .args([
                &format!("--remote-debugging-port={port}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1280,900",
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium-headless-shell (tests/tools/install.sh installs it)");
        let list = format!("http://127.0.0.1:{port}/json/list");
        let page = || {
            let out = Command::new("curl").args(["-s", &list]).output().ok()?;
            let targets: Value = serde_json::from_slice(&out.stdout).ok()?;
            targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(String::from)
        };
        let deadline = Instant::now() + WAIT;
        let ws_url = loop {
            if let Some(u) = page() {
                break u;
            }
            assert!(
                Instant::now() < deadline,
                "Chromium's DevTools endpoint never came"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap();
        Browser {
            child,
            _profile: profile,
            ws,
            next: 0,
        }
    }

    /// Sends one command and returns its result (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.unwrap();
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("DevTools answers")
                .expect("DevTools open")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression on the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Navigates and waits for the load.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.loaded().await;
    }

    /// Waits until the document has loaded.
    pub async fn loaded(&mut self) {
        for _ in 0..100 {
            if self.eval("document.readyState").await == "complete" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page did not load");
    }

    /// A real mouse click (pressed and released) at the centre of the element `selector`.
    pub async fn click(&mut self, selector: &str) {
        let at = self
            .eval(&format!(
                "(() => {{ const r = document.querySelector({selector:?}).getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Waits until `expression` is true on the page.
    pub async fn until(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        while self.eval(expression).await != true {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
