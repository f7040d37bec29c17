//! Proptest generators of valid Bottles, shared by the tests that check what they render
//! (tests/pipelock_check.rs against the real pipelock and gitleaks, tests/properties.rs
//! against the sidecars' own loaders).

#![allow(dead_code)]

use bottle_operator::contract::api::{
    BottleSpec, CredRoute, DlpPattern, EgressRoute, GitRemote, RouteAuth, SecretKeyRef,
};
use bottle_operator::contract::model::dlp_regex;
use proptest::prelude::*;

/// One DNS label: LDH, or a valid punycode A-label (an invalid `xn--` one is refused).
pub fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?".prop_filter("no A-label", |l| !l.starts_with("xn--")),
        1 => prop::sample::select(vec!["xn--bcher-kva", "xn--mnchen-3ya", "xn--80ak6aa92e"])
            .prop_map(String::from),
    ]
}

/// A lower-case domain of two to four labels.
pub fn domain() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 1..3),
        prop::sample::select(vec!["com", "org", "io", "example", "test", "co.uk", "dev"]),
    )
        .prop_map(|(ls, tld)| format!("{}.{tld}", ls.join(".")))
}

/// `d` as a user might write it (`style` picks): upper-case, a trailing dot, or as it is.
pub fn styled(d: &str, style: u8) -> String {
    match style % 6 {
        0 => d.to_ascii_uppercase(),
        1 => format!("{d}."),
        2 => format!("{}.", d.to_ascii_uppercase()),
        _ => d.to_string(),
    }
}

/// A host as a user might write it: sometimes upper-case or with a trailing dot.
pub fn host() -> impl Strategy<Value = String> {
    (domain(), any::<u8>()).prop_map(|(d, style)| styled(&d, style))
}

/// An allowlist entry: a host, or `*.domain`.
pub fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![3 => host(), 1 => domain().prop_map(|d| format!("*.{d}"))]
}

/// A credential reference, with and without header and scheme.
pub fn auth() -> impl Strategy<Value = RouteAuth> {
    (
        prop::option::of(prop::sample::select(vec!["x-api-key", "Private-Token"])),
        prop::option::of(Just("Bearer")),
        "[a-z][a-z0-9-]{0,10}",
        "[a-z][a-z0-9_.-]{0,10}",
    )
        .prop_map(|(header, scheme, name, key)| RouteAuth {
            header: header.map(Into::into),
            scheme: scheme.map(Into::into),
            secret_key_ref: SecretKeyRef { name, key },
        })
}

/// DLP regexes our validation accepts, tricky ones included.
pub fn accepted_regex() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            r"excorp_[A-Za-z0-9]{32}",
            r"\d{4}-\d{4}-\d{4}",
            "(?i)secret_[a-f0-9]{16}",
            "(?P<tok>tok_[a-z]{8})",
            "(?:ab|cd){2,5}x",
            r"^AKIA[0-9A-Z]{16}$",
            r"\bkey\b=\S+",
            r"[[:alpha:]]\p{L}\x41\.",
            "'single-quote'",
            r#""double" and \\ backslash"#,
            r"colon: hash # \{braces\}",
            "- dash start",
            "[]a]",
        ])
        .prop_map(String::from),
        regex_source().prop_filter("accepted", |r| dlp_regex::check(r).is_ok()),
    ]
}

/// A route path prefix in the normal form egress compares (no dot segments, no empty ones),
/// sometimes with `;`, `~` or an encoded space in it.
pub fn route_prefix() -> impl Strategy<Value = String> {
    "/([a-z0-9_;~-][a-z0-9_.;~-]{0,5}/){0,2}([a-z0-9_~-]([a-z0-9_.;~-]|%20){0,5})?"
}

/// A cred-proxy upstream: any host spelling, an explicit port or not, a base path or not.
pub fn upstream() -> impl Strategy<Value = String> {
    (
        host(),
        prop::sample::select(vec!["", ":443", ":8443"]),
        prop::sample::select(vec!["", "/", "/v1", "/v1/", "/api/v3"]),
    )
        .prop_map(|(h, port, path)| format!("https://{h}{port}{path}"))
}

/// A git remote URL in both of git's spellings, with and without a port.
pub fn remote_url() -> impl Strategy<Value = (String, String)> {
    (host(), 0..3u8, prop::sample::select(vec![22u16, 2222])).prop_map(|(h, form, port)| {
        let url = match form {
            0 => format!("git@{h}:o/r.git"),
            1 => format!("ssh://git@{h}/o/r.git"),
            _ => format!("ssh://git@{h}:{port}/o/r.git"),
        };
        (url, h)
    })
}

/// A Bottle the model should accept: every part of the spec the renderers read.
pub fn bottle() -> impl Strategy<Value = BottleSpec> {
    (
        prop::collection::vec(pattern(), 0..6),
        prop::collection::vec(pattern(), 0..3),
        prop::collection::vec(pattern(), 0..2),
        // Keyed by the lower-case domain, so two spellings of one host never collide.
        prop::collection::btree_map(
            domain(),
            (
                any::<u8>(),
                prop::collection::vec(route_prefix(), 0..3),
                prop::option::of(auth()),
            ),
            0..3,
        ),
        prop::collection::btree_map("[a-z][a-z0-9]{0,8}", (upstream(), auth()), 0..3),
        any::<bool>(),
        prop::collection::vec(("[A-Za-z][A-Za-z0-9 _-]{0,20}", accepted_regex()), 0..4),
        prop::option::of(remote_url()),
    )
        .prop_map(
            |(allow, passthrough, websocket, routes, cred, block, patterns, remote)| {
                let mut s = BottleSpec::default();
                s.egress.allow = allow;
                s.egress.passthrough = passthrough;
                s.egress.websocket = websocket;
                s.egress.routes = routes
                    .into_iter()
                    .map(|(d, (style, paths, auth))| EgressRoute {
                        host: styled(&d, style),
                        paths,
                        auth,
                    })
                    .collect();
                s.cred_proxy.routes = cred
                    .into_iter()
                    .map(|(name, (upstream, auth))| CredRoute {
                        name,
                        upstream,
                        auth,
                    })
                    .collect();
                s.dlp.block = block;
                s.dlp.patterns = patterns
                    .into_iter()
                    .map(|(name, regex)| DlpPattern { name, regex })
                    .collect();
                if let Some((url, host)) = remote {
                    s.git.remotes = vec![GitRemote {
                        name: "origin".into(),
                        url,
                        ssh_key_secret_ref: SecretKeyRef {
                            name: "k".into(),
                            key: "id".into(),
                        },
                        known_hosts: format!("{host} ssh-ed25519 AAAA"),
                        ..Default::default()
                    }];
                    s.git.scan_allowlist = vec!["fixture-[0-9]+".into()];
                }
                s
            },
        )
}

// ---------------------------------------------------------------- regexes

/// Pieces of regexes: plain ones both dialects share and the tricky constructs that differ.
pub fn atom() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        // Shared.
        "a",
        "B",
        "_",
        "0",
        "-",
        r"\.",
        r"\d",
        r"\w",
        r"\s",
        r"\D",
        ".",
        "[a-c]",
        "[^ab]",
        "[[:alpha:]]",
        "[[:^digit:]]",
        r"\p{L}",
        r"\pN",
        r"\P{Lu}",
        r"\x41",
        r"\x{62}",
        "^",
        "$",
        r"\b",
        r"\B",
        r"\A",
        r"\z",
        "[]a]",
        r"[\d_-]",
        r"\t",
        r"\-",
        r"\<x",
        "()",
        // Differ or unsupported.
        "(?=a)",
        "(?!a)",
        "(?<=a)",
        "(?<!a)",
        r"(a)\1",
        "[a&&b]",
        "[a-c--b]",
        "[a~~b]",
        "[a[b]]",
        r"\<",
        r"\>",
        r"\b{start}",
        r"\b{end}",
        r"\b{start-half}",
        r"\u0041",
        r"\U{42}",
        r"\p{Letter}",
        r"\p{greek}",
        r"\p{sc=Greek}",
        "(?x)a b",
        "(?u)a",
        "(?R)a",
        "a{,3}",
        "a{1001}",
        "a{2,1500}",
        r"\Q.\E",
        r"\0",
        r"\101",
        "(?<n>a)",
        "(?P<m>b)",
        "(?<a.b>c)",
        "a**",
        "a{2}{3}",
        "(?:a{40}){30}",
        r"\e",
        r"\/",
        r"\C",
        "(?i)",
        "(?-i)",
        r"\Z",
        "[[:word:]]",
        r"\pZ",
        r"\p{Any}",
    ])
    .prop_map(String::from)
}

/// Regexes built from [`atom`]s: concatenation, alternation, groups, flags, repetition.
pub fn regex_source() -> impl Strategy<Value = String> {
    atom().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}|{b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("(?:{a})")),
            inner.clone().prop_map(|a| format!("(?i:{a})")),
            (
                inner,
                prop::sample::select(vec!["*", "+?", "?", "{2}", "{1,3}", "{0,}", "{3,}?"])
            )
                .prop_map(|(a, op)| format!("(?:{a}){op}")),
        ]
    })
}
