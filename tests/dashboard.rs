//! `kubectl bottle dashboard` against the real API server, as an approver with a client
//! certificate of their own: its refusals to whatever is not its own page (no token, another
//! Host, a cross-origin or token-less post) with curl, then Debian's real headless Chromium,
//! driven over the DevTools protocol, clicking Approve on a pending request: the grant
//! reaches the Bottle. The screenshot it takes is `target/tmp/dashboard.png`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bottle_operator::contract::api::{AccessPhase, AccessRequest, Bottle};
use futures::{SinkExt, StreamExt};
use kube::Api;
use serde_json::{Value, json};
use support::control_plane::free_port;
use support::people::{Person, empty_bottle};
use support::{Operator, cluster, eventually, namespace};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);

/// The dashboard as a process, and the URL it printed.
struct Dashboard {
    child: Child,
    url: String,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dashboard(approver: &Person, ns: &str) -> Dashboard {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-bottle"))
        .env("KUBECONFIG", &approver.kubeconfig)
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

/// curl: status code, headers and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "-o", "-", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

async fn phase(c: &kube::Client, ns: &str, name: &str) -> Option<AccessPhase> {
    Api::<AccessRequest>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .ok()?
        .status?
        .phase
}

/// A DevTools session with one page of a headless Chromium.
struct Browser {
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
    async fn start() -> Self {
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
        let ws_url = eventually("Chromium's DevTools endpoint", WAIT, || async {
            let out = Command::new("curl").args(["-s", &list]).output().ok()?;
            let targets: Value = serde_json::from_slice(&out.stdout).ok()?;
            targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(String::from)
        })
        .await;
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
    async fn call(&mut self, method: &str, params: Value) -> Value {
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

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.loaded().await;
    }

    async fn loaded(&mut self) {
        for _ in 0..100 {
            if self.eval("document.readyState").await == "complete" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page did not load");
    }

    /// A real mouse click (pressed and released) at the centre of the element `selector`.
    async fn click(&mut self, selector: &str) {
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
}

#[tokio::test]
async fn the_dashboard_refuses_what_is_not_its_page_and_a_click_approves() {
    let ns = namespace("dashboard");
    let _op = Operator::start(&ns);
    let c = cluster().client().await.unwrap();
    empty_bottle(&ns, "a");
    let requester = Person::new(&ns, "agent", &["bottle-requester"], None);
    let approver = Person::new(&ns, "alice", &["bottle-approver"], None);
    let first = requester.request(&ns, "a", "one.example.com", &["/api/"]);
    let d = dashboard(&approver, &ns);
    let base = d.url.split("/?").next().unwrap().to_string();
    let port = base.rsplit(':').next().unwrap().to_string();
    let token = d.url.split("token=").nth(1).unwrap().to_string();

    // Its page, with the request and the headers that keep it its own.
    let (code, page) = curl(&[&d.url]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(&first) && page.contains(&approver.name),
        "{page}"
    );
    assert!(
        page.contains("&lt;b&gt;needs&lt;/b&gt; it"),
        "the agent's words escaped: {page}"
    );
    let lower = page.to_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    assert!(lower.contains("referrer-policy: same-origin"), "{page}");
    assert!(!lower.contains("access-control-allow"), "no CORS: {page}");
    // Refused: no token, a wrong one, another Host (DNS rebinding).
    assert_eq!(curl(&[&format!("{base}/")]).0, 403);
    assert_eq!(curl(&[&format!("{base}/?token=00{}", &token[2..])]).0, 403);
    assert_eq!(
        curl(&["-H", &format!("Host: rebound.example:{port}"), &d.url]).0,
        421
    );
    // Refused writes: from another origin, without the form's token, not a form.
    let form = format!("token={token}&namespace={ns}&name={first}&verdict=Approve");
    let post = |extra: &[&str], body: &str| {
        let mut args = vec!["-X", "POST", "--data", body];
        args.extend_from_slice(extra);
        let url = format!("{base}/decide");
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push(url);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        curl(&refs).0
    };
    assert_eq!(post(&["-H", "Origin: http://evil.example"], &form), 403);
    assert_eq!(post(&["-H", "Origin: null"], &form), 403);
    assert_eq!(post(&["-H", "Sec-Fetch-Site: cross-site"], &form), 403);
    let no_token = format!("namespace={ns}&name={first}&verdict=Approve");
    assert_eq!(post(&["-H", &format!("Origin: {base}")], &no_token), 403);
    assert_eq!(
        post(
            &[
                "-H",
                "Content-Type: application/json",
                "-H",
                &format!("Origin: {base}")
            ],
            &form
        ),
        415
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        phase(&c, &ns, &first).await,
        Some(AccessPhase::Pending),
        "nothing was decided"
    );

    // The browser: the page lists the request; a request filed now appears without a reload.
    let mut b = Browser::start().await;
    b.goto(&d.url).await;
    let second = requester.request(&ns, "a", "two.example.com", &["/api/"]);
    let selector = format!("form[aria-label=\"decide {second}\"] button[value=\"Approve\"]");
    let query = format!("document.querySelector({selector:?}) !== null");
    // The page refreshes itself from the dashboard's watches.
    let deadline = std::time::Instant::now() + WAIT;
    while b.eval(&query).await != true {
        assert!(
            std::time::Instant::now() < deadline,
            "{second} never appeared on the open page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shot = b
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["data"].as_str().unwrap(),
    )
    .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let out = support::repo().join("target/tmp");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dashboard.png"), &png).unwrap();

    b.click(&selector).await;
    let r = eventually("the click approved it", WAIT, || async {
        let r = Api::<AccessRequest>::namespaced(c.clone(), &ns)
            .get(&second)
            .await
            .ok()?;
        (r.status.as_ref()?.phase == Some(AccessPhase::Approved)).then_some(r)
    })
    .await;
    assert_eq!(r.spec.decision.unwrap().decided_by, approver.name);
    eventually("the grant in the Bottle", WAIT, || async {
        let b = Api::<Bottle>::namespaced(c.clone(), &ns)
            .get("a")
            .await
            .ok()?;
        b.spec
            .egress
            .routes
            .iter()
            .any(|r| r.host == "two.example.com" && r.paths == ["/api/"])
            .then_some(())
    })
    .await;
    // Back on the queue after the post; the live refresh leaves only the first waiting.
    b.loaded().await;
    let count = "document.querySelectorAll('form[action=\"/decide\"]').length";
    let deadline = std::time::Instant::now() + WAIT;
    while b.eval(count).await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the approved request never left the queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let decided = b
        .eval("document.getElementById('decided').parentElement.innerText")
        .await;
    assert!(
        decided.as_str().unwrap_or_default().contains(&second),
        "{decided}"
    );
    assert_eq!(phase(&c, &ns, &first).await, Some(AccessPhase::Pending));
}
