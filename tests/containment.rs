//! The in-Pod traffic lock, for real: a network namespace plays the Pod, another plays the
//! internet (veth, documentation addresses only, no route anywhere else), the real `netinit`
//! installs the rules, the real egress runs as its sidecar UID, and probes run as the agent
//! UID. Needs root (CI runs as root); it fails, never skips, without it.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/netns.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bottle_operator::contract::config::egress::{EgressConfig, EgressRoute};
use bottle_operator::contract::config::layout::{
    AGENT_UID, EGRESS_ADMIN_PORT, EGRESS_PORT, EGRESS_UID, PIPELOCK_PORT, PIPELOCK_UID,
    SUPERVISE_PORT, SUPERVISE_UID,
};
use netns::{World, run};
use serde_json::Value;

/// The scripts the containment world copies in.
const RUNTIME_FILES: &[&str] = &["probe.py", "internet.py", "listen.py"];

/// The containment world: the internet also answers on the metadata address and an outside
/// resolver.
fn world() -> World {
    World::new(
        "containment",
        RUNTIME_FILES,
        &[("192.0.2.2", "origin.test")],
        &["169.254.169.254/32", "198.51.100.53/32"],
    )
}

fn probes() -> Value {
    serde_json::json!([
        ["tcp_internet", "tcp", "192.0.2.2", 80],
        ["tcp6_internet", "tcp", "2001:db8::2", 443],
        ["udp_dns", "udp", "198.51.100.53", 53],
        ["tcp_dns", "tcp", "198.51.100.53", 53],
        ["icmp", "icmp", "192.0.2.2"],
        ["metadata", "tcp", "169.254.169.254", 80],
        [
            "egress_port",
            "tcp",
            "127.0.0.1",
            EGRESS_PORT,
            "GET / HTTP/1.0\r\n\r\n"
        ],
        [
            "egress_port_v6",
            "tcp",
            "::1",
            EGRESS_PORT,
            "GET / HTTP/1.0\r\n\r\n"
        ],
        [
            "egress_admin",
            "tcp",
            "127.0.0.1",
            EGRESS_ADMIN_PORT,
            "GET /healthz HTTP/1.0\r\n\r\n"
        ],
        ["pipelock_port", "tcp", "127.0.0.1", PIPELOCK_PORT],
    ])
}

fn egress_config(w: &World, ca: &Path) -> PathBuf {
    let mat = bottle_operator::operator::render::ca::generate("t", "b").unwrap();
    let (cert, key) = (w.dir.path().join("ca.crt"), w.dir.path().join("ca.key"));
    std::fs::write(&cert, &mat.cert_pem).unwrap();
    std::fs::write(&key, &mat.key_pem).unwrap();
    let cfg = EgressConfig {
        listen: format!("127.0.0.1:{EGRESS_PORT}"),
        admin_listen: format!("127.0.0.1:{EGRESS_ADMIN_PORT}"),
        upstream_proxy: None,
        ca_cert: cert.display().to_string(),
        ca_key: key.display().to_string(),
        ports: vec![443],
        allow: vec![],
        passthrough: vec![],
        routes: vec![EgressRoute {
            host: "origin.test".parse().unwrap(),
            paths: vec![],
            auth: None,
        }],
    };
    let path = w.dir.path().join("egress.yaml");
    std::fs::write(&path, serde_norway::to_string(&cfg).unwrap()).unwrap();
    let _ = ca;
    path
}

/// The internet's servers, with the `origin.crt`/`origin.key` already in the world's dir.
fn start_internet(w: &mut World) {
    let net = w.net.clone();
    let internet = w.file("internet.py");
    let d = w.dir.path().to_path_buf();
    let (crt, k) = (d.join("origin.crt"), d.join("origin.key"));
    w.spawn_ready(
        &net,
        0,
        &[
            "/usr/bin/python3",
            internet.to_str().unwrap(),
            crt.to_str().unwrap(),
            k.to_str().unwrap(),
        ],
    );
}

#[test]
fn the_agent_reaches_only_its_sidecars_and_the_sidecars_reach_out() {
    let mut w = world();
    // The origin's certificate for origin.test, from a CA the egress sidecar trusts.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "internet CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["origin.test".into()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "origin.test");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let d = w.dir.path().to_path_buf();
    for (f, body) in [
        ("origin.crt", cert.pem()),
        ("origin.key", key.serialize_pem()),
        ("internet-ca.crt", ca_cert.pem()),
    ] {
        std::fs::write(d.join(f), body).unwrap();
    }
    // Everything the test runs must be readable by the sidecar UIDs.
    for f in ["origin.crt", "origin.key", "internet-ca.crt"] {
        run(&["chmod", "0644", d.join(f).to_str().unwrap()]);
    }

    start_internet(&mut w);

    // Before the lock: the agent UID reaches the internet (so the blocks below are the rules').
    let before = w.probe(
        AGENT_UID as u32,
        &serde_json::json!([["tcp_internet", "tcp", "192.0.2.2", 80]]),
    );
    assert_eq!(before["tcp_internet"].0, "ok:internet-80");

    w.netinit_default(&[]);

    // The real egress as its sidecar UID, and stand-ins for pipelock and egress over IPv6.
    let cfg = egress_config(&w, &d.join("internet-ca.crt"));
    for f in ["ca.crt", "ca.key", "egress.yaml"] {
        run(&[
            "chown",
            &format!("{EGRESS_UID}:{EGRESS_UID}"),
            d.join(f).to_str().unwrap(),
        ]);
        run(&["chmod", "0400", d.join(f).to_str().unwrap()]);
    }
    let pod = w.pod.clone();
    let sidecar = w.file("bottle-sidecar");
    let sidecar = sidecar.to_str().unwrap();
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &pod,
        "setpriv",
        &format!("--reuid={EGRESS_UID}"),
        &format!("--regid={EGRESS_UID}"),
        "--clear-groups",
        "env",
    ])
    .arg(format!(
        "SSL_CERT_FILE={}",
        d.join("internet-ca.crt").display()
    ))
    .args([sidecar, "egress", "--config", cfg.to_str().unwrap()])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    w.children.push(control_plane::spawn_tied(&mut c).unwrap());
    let listen = w.file("listen.py");
    w.spawn_ready(
        &pod,
        PIPELOCK_UID as u32,
        &[
            "/usr/bin/python3",
            listen.to_str().unwrap(),
            "4",
            &PIPELOCK_PORT.to_string(),
            "pipelock",
        ],
    );
    w.spawn_ready(
        &pod,
        EGRESS_UID as u32,
        &[
            "/usr/bin/python3",
            listen.to_str().unwrap(),
            "6",
            &EGRESS_PORT.to_string(),
            "egress6",
        ],
    );
    let t = std::time::Instant::now();
    while w.probe(
        EGRESS_UID as u32,
        &serde_json::json!([[
            "up",
            "tcp",
            "127.0.0.1",
            EGRESS_ADMIN_PORT,
            "GET /healthz HTTP/1.0\r\n\r\n"
        ]]),
    )["up"]
        .0
        == "refused"
    {
        assert!(t.elapsed().as_secs() < 20, "egress did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let agent = w.probe(AGENT_UID as u32, &probes());
    let sidecar = w.probe(EGRESS_UID as u32, &probes());
    let root = w.probe(
        0,
        &serde_json::json!([["tcp_internet", "tcp", "192.0.2.2", 80]]),
    );
    let expect_agent = [
        ("tcp_internet", "refused"),
        ("tcp6_internet", "refused"),
        // UDP and ICMP rejects reach a local sender as EPERM on send: also immediate.
        ("udp_dns", "denied"),
        ("tcp_dns", "refused"),
        ("icmp", "denied"),
        ("metadata", "refused"),
        ("egress_admin", "refused"),
        ("pipelock_port", "refused"),
    ];
    for (probe, want) in expect_agent {
        let (got, secs) = &agent[probe];
        assert_eq!(
            (probe, got.as_str()),
            (probe, want),
            "agent {probe}: {agent:?}"
        );
        assert!(
            *secs < 1.0,
            "agent {probe} took {secs}s: blocks must fail fast, not time out"
        );
        // Positive control: the same destination works for a sidecar UID.
        assert!(
            sidecar[probe].0.starts_with("ok:"),
            "sidecar {probe}: {:?}",
            sidecar[probe]
        );
    }
    assert!(
        agent["egress_port"].0.starts_with("ok:HTTP/1.0 400"),
        "agent to egress: {:?}",
        agent["egress_port"]
    );
    assert_eq!(agent["egress_port_v6"].0, "ok:egress6");
    assert_eq!(
        root["tcp_internet"].0, "refused",
        "UIDs that are not sidecars are locked like the agent"
    );

    // Through egress: the declared host works, everything else is refused by egress.
    let ca = d.join("ca.crt");
    run(&["chmod", "0444", ca.to_str().unwrap()]);
    let proxy = format!("http://127.0.0.1:{EGRESS_PORT}");
    let via = |url: &str| {
        w.curl_as(
            AGENT_UID as u32,
            &["--proxy", &proxy, "--cacert", ca.to_str().unwrap(), url],
        )
    };
    let (code, body) = via("https://origin.test/");
    assert_eq!((code, body.trim()), (200, "internet"));
    assert_eq!(via("https://undeclared.test/").0, 403);
    assert_eq!(via("https://192.0.2.2/").0, 403);
    assert_eq!(via("https://169.254.169.254/").0, 403);
    assert_eq!(
        via(&format!("https://127.0.0.1:{EGRESS_ADMIN_PORT}/")).0,
        403
    );
    // Without the proxy the agent gets nowhere.
    let (code, err) = w.curl_as(
        AGENT_UID as u32,
        &[
            "--cacert",
            d.join("internet-ca.crt").to_str().unwrap(),
            "https://origin.test/",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        err.contains("Connection refused") || err.contains("Couldn't connect"),
        "{err}"
    );

    // The sidecar's files and process environment are closed to the agent.
    let egress_pid = w.children[1].id();
    let secrets = w.probe(
        AGENT_UID as u32,
        &serde_json::json!([
            ["ca_key", "read", d.join("ca.key")],
            ["config", "read", cfg],
            ["environ", "read", format!("/proc/{egress_pid}/environ")]
        ]),
    );
    assert_eq!(secrets["ca_key"].0, "denied");
    assert_eq!(secrets["config"].0, "denied");
    assert_eq!(secrets["environ"].0, "denied");

    // Blocked attempts are counted by the REJECT rules.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod,
            "iptables",
            "-L",
            "BOTTLE-AGENT",
            "-v",
            "-n",
            "-x",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let rejected: u64 = table
        .lines()
        .filter(|l| l.contains("REJECT"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(rejected >= 8, "{table}");
}

#[test]
fn only_supervise_reaches_the_api_server_though_the_pod_may() {
    let mut w = world();
    let d = w.dir.path().to_path_buf();
    // A plain listener stands in for the API server at 192.0.2.2:80; 443 is "the internet".
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["origin.test".into()])
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    std::fs::write(d.join("origin.crt"), cert.pem()).unwrap();
    std::fs::write(d.join("origin.key"), ca_key.serialize_pem()).unwrap();
    for f in ["origin.crt", "origin.key"] {
        run(&["chmod", "0644", d.join(f).to_str().unwrap()]);
    }
    start_internet(&mut w);
    w.netinit(
        &[EGRESS_UID, PIPELOCK_UID, SUPERVISE_UID],
        &[EGRESS_PORT, SUPERVISE_PORT],
        &[
            "--api-server",
            "192.0.2.2:80",
            "--api-uid",
            &SUPERVISE_UID.to_string(),
        ],
    );
    let api = serde_json::json!([["api", "tcp", "192.0.2.2", 80]]);
    let supervise = w.probe(SUPERVISE_UID as u32, &api);
    let egress = w.probe(EGRESS_UID as u32, &api);
    let agent = w.probe(AGENT_UID as u32, &api);
    assert_eq!(supervise["api"].0, "ok:internet-80", "{supervise:?}");
    assert_eq!(egress["api"].0, "refused", "{egress:?}");
    assert!(egress["api"].1 < 1.0, "refused at once: {egress:?}");
    assert_eq!(agent["api"].0, "refused", "{agent:?}");
    // The rest of that address is still the sidecars' (the control for the block above).
    let (code, body) = w.curl_as(EGRESS_UID as u32, &["-k", "https://192.0.2.2/"]);
    assert_eq!((code, body.trim()), (200, "internet"));
}
