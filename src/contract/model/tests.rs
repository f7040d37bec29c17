use super::*;
use crate::contract::api::{
    BottleSpec, CredRoute, EgressRoute, GitRemote, RouteAuth, SecretKeyRef,
};

fn auth(secret: &str, key: &str) -> RouteAuth {
    RouteAuth {
        header: None,
        scheme: Some("Bearer".into()),
        secret_key_ref: SecretKeyRef {
            name: secret.into(),
            key: key.into(),
        },
    }
}

fn spec_with_allow(hosts: &[&str]) -> BottleSpec {
    let mut s = BottleSpec::default();
    s.egress.allow = hosts.iter().map(|h| h.to_string()).collect();
    s
}

#[test]
fn hosts_are_normalised_and_ip_literals_refused() {
    assert_eq!(
        Host::parse("API.Example.COM.").unwrap().as_str(),
        "api.example.com"
    );
    for bad in [
        "",
        "169.254.169.254",
        "::1",
        "[::1]",
        "a..b",
        "-a.com",
        "a_b.com",
        "exa mple.com",
        "1.2.3.4.5",
        &"a".repeat(64),
    ] {
        assert!(Host::parse(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn only_leading_wildcards_over_a_real_domain() {
    assert_eq!(
        HostPattern::parse("*.githubusercontent.com")
            .unwrap()
            .to_string(),
        "*.githubusercontent.com"
    );
    for bad in ["*", "*.com", "api.*.com", "*bad*", "**.example.com"] {
        assert!(HostPattern::parse(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn invalid_allow_entry_names_the_field_and_value() {
    let err = Policy::from_spec(&spec_with_allow(&["ok.example.com", "10.0.0.1"])).unwrap_err();
    assert_eq!(err.reason, Reason::InvalidHost);
    assert!(
        err.message.contains("egress.allow") && err.message.contains("10.0.0.1"),
        "{}",
        err.message
    );
}

#[test]
fn route_and_upstream_hosts_join_the_allowlist_and_passthrough_implies_allow() {
    let mut s = spec_with_allow(&["pypi.org"]);
    s.egress.passthrough = vec!["api.anthropic.com".into()];
    s.egress.routes = vec![EgressRoute {
        host: "api.github.com".into(),
        paths: vec!["/repos/".into()],
        auth: None,
    }];
    s.cred_proxy.routes = vec![CredRoute {
        name: "llm".into(),
        upstream: "https://llm.example.com:8443/v1".into(),
        auth: auth("creds", "llm"),
    }];
    let p = Policy::from_spec(&s).unwrap();
    let allow: Vec<String> = p.allow.iter().map(ToString::to_string).collect();
    assert_eq!(
        allow,
        [
            "api.anthropic.com",
            "api.github.com",
            "llm.example.com",
            "pypi.org"
        ]
    );
    assert_eq!(
        p.egress_ports().into_iter().collect::<Vec<_>>(),
        [443, 8443]
    );
}

#[test]
fn an_upstream_is_asked_for_by_the_host_the_allowlists_hold() {
    // With the trailing dot kept, cred-proxy's CONNECT named `llm.example.com.`, which
    // pipelock's passthrough list (no dot trimming) does not match: the credential was
    // intercepted and header-scanned. Found by tests/properties.rs.
    let mut s = BottleSpec::default();
    s.cred_proxy.routes = vec![CredRoute {
        name: "llm".into(),
        upstream: "https://LLM.Example.com.:8443/v1".into(),
        auth: auth("creds", "llm"),
    }];
    let p = Policy::from_spec(&s).unwrap();
    let r = &p.cred_routes[0];
    assert_eq!(r.upstream.to_string(), "https://llm.example.com:8443/v1");
    assert_eq!((r.host.as_str(), r.port), ("llm.example.com", 8443));
    assert!(
        p.pipelock_passthrough()
            .contains(&HostPattern::Exact(r.host.clone()))
    );
}

#[test]
fn a_websocket_wildcard_is_spliced_at_its_apex_too() {
    // pipelock 2.3.0's `*.d` passthrough entry misses `d` (tests/pipelock_facts.rs), so a
    // WebSocket to the apex was intercepted and lost its Upgrade header. Found by
    // tests/properties.rs.
    let mut s = BottleSpec::default();
    s.egress.websocket = vec!["*.ws.example.com".into()];
    let p = Policy::from_spec(&s).unwrap();
    let spliced: Vec<String> = p
        .pipelock_passthrough()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(spliced, ["ws.example.com", "*.ws.example.com"]);
}

#[test]
fn hosts_are_names_every_url_parser_reads_alike() {
    // `xn--a.com` passed the DNS-label check but is invalid punycode, so the same host was
    // accepted in egress.allow and refused as a credProxy upstream (the `url` crate refuses
    // it). Found by tests/properties.rs.
    for bad in ["xn--a.com", "XN--A.com", "*.xn--a.example.com", "a.0x1"] {
        let err = Policy::from_spec(&spec_with_allow(&[bad])).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidHost, "{bad}: {}", err.message);
    }
    let p = Policy::from_spec(&spec_with_allow(&["xn--bcher-kva.example", "a--b.com"])).unwrap();
    assert_eq!(p.allow.len(), 2);
}

#[test]
fn upstreams_must_be_plain_https_urls() {
    for (upstream, why) in [
        ("http://api.example.com", "https"),
        ("https://user:pw@api.example.com", "credentials"),
        ("https://api.example.com/?key=x", "query"),
        ("https://10.1.2.3", "hostname"),
        ("not a url", "URL"),
    ] {
        let mut s = BottleSpec::default();
        s.cred_proxy.routes = vec![CredRoute {
            name: "r".into(),
            upstream: upstream.into(),
            auth: auth("s", "k"),
        }];
        let err = Policy::from_spec(&s).unwrap_err();
        assert!(
            matches!(err.reason, Reason::InvalidUrl | Reason::InvalidHost),
            "{upstream}: {}",
            err.reason
        );
        assert!(err.message.contains(why), "{upstream}: {}", err.message);
    }
}

#[test]
fn duplicates_are_refused() {
    let mut s = BottleSpec::default();
    let r = EgressRoute {
        host: "api.github.com".into(),
        paths: vec![],
        auth: None,
    };
    s.egress.routes = vec![
        r.clone(),
        EgressRoute {
            host: "API.github.com".into(),
            ..r
        },
    ];
    assert_eq!(
        Policy::from_spec(&s).unwrap_err().reason,
        Reason::DuplicateRoute
    );
}

#[test]
fn ssh_urls_in_both_spellings() {
    let scp = SshUrl::parse("git@github.com:org/repo.git").unwrap();
    assert_eq!(
        (
            scp.user.as_str(),
            scp.host.as_str(),
            scp.port,
            scp.path.as_str()
        ),
        ("git", "github.com", 22, "org/repo.git")
    );
    let url = SshUrl::parse("ssh://git@git.example.com:2222/team/repo.git").unwrap();
    assert_eq!(
        (url.host.as_str(), url.port, url.path.as_str()),
        ("git.example.com", 2222, "team/repo.git")
    );
    for bad in [
        "https://github.com/org/repo",
        "github.com:org/repo",
        "git@github.com:",
        "ssh://git@h.example:0/r",
        "git@h.example:../etc",
    ] {
        assert!(SshUrl::parse(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn secret_keys_are_collected_once_and_files_are_distinct() {
    let mut s = BottleSpec::default();
    s.egress.routes = vec![EgressRoute {
        host: "api.github.com".into(),
        paths: vec![],
        auth: Some(auth("creds", "gh")),
    }];
    s.cred_proxy.routes = vec![
        CredRoute {
            name: "a".into(),
            upstream: "https://a.example.com".into(),
            auth: auth("creds", "gh"),
        },
        CredRoute {
            name: "b".into(),
            upstream: "https://b.example.com".into(),
            auth: auth("creds", "other"),
        },
    ];
    s.git.remotes = vec![GitRemote {
        name: "origin".into(),
        url: "git@github.com:o/r.git".into(),
        ssh_key_secret_ref: SecretKeyRef {
            name: "deploy".into(),
            key: "id".into(),
        },
        known_hosts: "github.com ssh-ed25519 AAAA".into(),
        ..Default::default()
    }];
    let p = Policy::from_spec(&s).unwrap();
    let keys = p.secret_keys();
    assert_eq!(keys.len(), 3);
    let files: BTreeSet<String> = keys.iter().map(SecretKey::file_name).collect();
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| !f.contains('/')));
    assert_eq!(p.egress_ports().into_iter().collect::<Vec<_>>(), [22, 443]);
}

fn spec_with_dlp(regexes: &[&str]) -> BottleSpec {
    let mut s = spec_with_allow(&["example.com"]);
    s.dlp.patterns = regexes
        .iter()
        .enumerate()
        .map(|(i, r)| crate::contract::api::DlpPattern {
            name: format!("p{i}"),
            regex: r.to_string(),
        })
        .collect();
    s
}

#[test]
fn a_dlp_regex_re2_would_refuse_is_invalid_and_the_message_names_the_field() {
    // The valid twin first, so the refusal below is about the regex alone.
    let ok = Policy::from_spec(&spec_with_dlp(&[r"tok_\d{4}", "(?i)key"])).unwrap();
    assert_eq!(ok.dlp_patterns.len(), 2);
    for (bad, says) in [
        ("tok(?=x)", "look-around"),
        ("[a-z&&b]", "&&"),
        (r"\<tok", r"\<"),
        ("a{2000}", "1000"),
    ] {
        let e = Policy::from_spec(&spec_with_dlp(&["fine", bad])).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidDlpPattern, "{bad}");
        assert!(
            e.message.starts_with("spec.dlp.patterns[1].regex (\"p1\")"),
            "{}",
            e.message
        );
        assert!(e.message.contains(says), "{}", e.message);
        assert!(
            e.message.contains("write") || e.message.contains("use"),
            "{}",
            e.message
        );
    }
}

#[test]
fn a_passthrough_wildcard_brings_its_apex_because_pipelock_splices_subdomains_only() {
    let mut s = spec_with_allow(&[]);
    s.egress.passthrough = vec!["*.example.org".into(), "api.example.com".into()];
    let p = Policy::from_spec(&s).unwrap();
    let got: Vec<String> = p.passthrough.iter().map(ToString::to_string).collect();
    assert_eq!(got, ["api.example.com", "example.org", "*.example.org"]);
    let allow: Vec<String> = p.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["api.example.com", "*.example.org"]);
}

#[test]
fn hosts_that_never_leave_the_cluster_are_refused_with_the_field_named() {
    for (field, spec) in [
        ("egress.allow", spec_with_allow(&["localhost"])),
        ("egress.allow", spec_with_allow(&["*.svc.cluster.local"])),
        ("egress.allow", spec_with_allow(&["api.team.svc"])),
        (
            "egress.allow",
            spec_with_allow(&["metadata.google.internal"]),
        ),
        ("egress.allow", spec_with_allow(&["printer.local"])),
    ] {
        let e = Policy::from_spec(&spec).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidHost);
        assert!(e.message.starts_with(field), "{}", e.message);
        assert!(e.message.contains("Name a public host"), "{}", e.message);
    }
    let mut s = spec_with_allow(&[]);
    s.egress.passthrough = vec!["my.localhost".into()];
    assert_eq!(
        Policy::from_spec(&s).unwrap_err().reason,
        Reason::InvalidHost
    );
    // Public names that merely contain those words pass.
    Policy::from_spec(&spec_with_allow(&[
        "localhost.example.com",
        "svc.example.com",
        "local.example.org",
        "internal.example.net",
    ]))
    .unwrap();
}

#[test]
fn route_paths_must_be_in_the_form_egress_compares() {
    let route = |p: &str| {
        let mut s = spec_with_allow(&[]);
        s.egress.routes = vec![crate::contract::api::EgressRoute {
            host: "api.github.com".into(),
            paths: vec![p.into()],
            auth: None,
        }];
        Policy::from_spec(&s)
    };
    route("/repos/acme/").unwrap();
    route("/user").unwrap();
    for (bad, says) in [
        ("/repos/./acme/", "write \"/repos/acme/\""),
        ("/repos/x/../acme/", "write \"/repos/acme/\""),
        ("/repos/%61cme/", "write \"/repos/acme/\""),
        ("/repos%2facme/", "plain path"),
        ("/../etc", "plain path"),
        ("/a%252e/", "plain path"),
    ] {
        let e = route(bad).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidPath, "{bad}");
        assert!(e.message.contains(says), "{bad}: {}", e.message);
    }
}

#[test]
fn quotes_in_dlp_regexes_and_allowlists_are_fine_now_that_toml_quotes_them() {
    let mut s = spec_with_dlp(&["tok'''en", r#"say "hi""#]);
    s.git.scan_allowlist = vec!["it'''s fine".into()];
    let p = Policy::from_spec(&s).unwrap();
    assert_eq!(p.dlp_patterns[0].regex, "tok'''en");
    // A regex over several lines is still refused, with the field named.
    let e = Policy::from_spec(&spec_with_dlp(&["a\nb"])).unwrap_err();
    assert_eq!(e.reason, Reason::InvalidDlpPattern);
    assert!(
        e.message.contains("spec.dlp.patterns[0].regex"),
        "{}",
        e.message
    );
}

#[test]
fn scan_allow_paths_are_relative_globs_and_reach_the_gate() {
    let mut s = spec_with_dlp(&[]);
    s.git.scan_allow_paths = vec!["tests/fixtures/**".into()];
    assert_eq!(
        Policy::from_spec(&s).unwrap().scan_allow_paths,
        vec!["tests/fixtures/**"]
    );
    for (bad, says) in [("/etc/**", "no leading /"), ("a/***", "***"), ("", "empty")] {
        s.git.scan_allow_paths = vec![bad.into()];
        let e = Policy::from_spec(&s).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidDlpPattern, "{bad}");
        assert!(
            e.message.contains("git.scanAllowPaths") && e.message.contains(says),
            "{}",
            e.message
        );
    }
}
