//! `kubectl bottle dashboard` against the real API server, as an approver with a client
//! certificate of their own: its refusals to whatever is not its own page (no token, another
//! Host, a cross-origin or token-less post) with curl, then Debian's real headless Chromium,
//! driven over the DevTools protocol, clicking Approve on a pending request: the grant
//! reaches the Bottle. The screenshot it takes is `target/tmp/dashboard.png`.

mod support;

use std::process::Command;
use std::time::Duration;

use bottle_operator::contract::api::{AccessPhase, AccessRequest};
use kube::Api;
use serde_json::json;
use support::dashboard::{Browser, Dashboard};
use support::people::{Person, empty_bottle, phase_of};
use support::{Operator, cluster, eventually, namespace, route_paths};

const WAIT: Duration = Duration::from_secs(60);

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

#[tokio::test]
async fn the_dashboard_refuses_what_is_not_its_page_and_a_click_approves() {
    let ns = namespace("dashboard");
    let _op = Operator::start(&ns);
    let c = cluster().client().await.unwrap();
    empty_bottle(&ns, "a");
    let requester = Person::new(&ns, "agent", &["bottle-requester"], None);
    let approver = Person::new(&ns, "alice", &["bottle-approver"], None);
    let first = requester.request(&ns, "a", "one.example.com", &["/api/"]);
    let d = Dashboard::start(&approver.kubeconfig, &ns);
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
        phase_of(&c, &ns, &first).await,
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
    b.until(&query, &format!("{second} on the open page")).await;
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
        (route_paths(&c, &ns, "a", "two.example.com").await == Some(vec!["/api/".to_string()]))
            .then_some(())
    })
    .await;
    // Back on the queue after the post; the live refresh leaves only the first waiting.
    b.loaded().await;
    b.until(
        "document.querySelectorAll('form[action=\"/decide\"]').length == 1",
        "the approved request to leave the queue",
    )
    .await;
    let decided = b
        .eval("document.getElementById('decided').parentElement.innerText")
        .await;
    assert!(
        decided.as_str().unwrap_or_default().contains(&second),
        "{decided}"
    );
    assert_eq!(phase_of(&c, &ns, &first).await, Some(AccessPhase::Pending));
}
