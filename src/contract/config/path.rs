//! Request paths as the route allowlists understand them. Part of the contract: the model
//! checks a Bottle's declared path prefixes with it, and egress and cred-proxy normalise what
//! the agent sends with it, so a declared prefix is always one a request can match.

/// A path whose meaning could differ between this proxy and the upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {0:?} is ambiguously encoded")]
pub struct AmbiguousPath(pub String);

/// Decodes and normalises a request path (no query), refusing anything whose meaning could
/// differ between this proxy and the upstream: encoded `/`, `\` or `%` after one decoding
/// (double encoding), NUL, a dot segment with `;` parameters (`..;`, which servers that drop
/// path parameters such as Tomcat and Jetty resolve as `..`), and `..` that would climb above
/// the root.
pub fn normalize(raw: &str) -> Result<String, AmbiguousPath> {
    let ambiguous = || AmbiguousPath(raw.to_string());
    if !raw.starts_with('/') {
        return Err(ambiguous());
    }
    let mut out: Vec<String> = Vec::new();
    let segments: Vec<&str> = raw[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        let decoded = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| ambiguous())?;
        if decoded.contains(['/', '\\', '%', '\0']) {
            return Err(ambiguous());
        }
        if let Some((name, _params)) = decoded.split_once(';')
            && matches!(name, "." | "..")
        {
            return Err(ambiguous());
        }
        match decoded.as_ref() {
            "" | "." => trailing_slash = i == last,
            ".." => {
                out.pop().ok_or_else(ambiguous)?;
                trailing_slash = i == last;
            }
            s => {
                out.push(s.to_string());
                trailing_slash = false;
            }
        }
    }
    let mut path = String::from("/");
    path.push_str(
        &out.iter()
            .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/"),
    );
    if trailing_slash && path.len() > 1 {
        path.push('/');
    }
    Ok(path)
}

/// Characters re-encoded in a path segment (RFC 3986 pchar complement).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dot_segment_with_parameters_is_ambiguous() {
        // Sent on as `/repos/acme/..;/admin`, which a server that drops `;params` reads as
        // `/repos/admin`, outside the route. Found by tests/properties.rs.
        for raw in [
            "/repos/acme/..;/admin",
            "/repos/acme/..;x=1/admin",
            "/repos/acme/%2e%2e%3b/admin",
            "/repos/acme/.;/x",
        ] {
            assert!(normalize(raw).is_err(), "{raw}");
        }
        assert_eq!(normalize("/a;v/b;x/..").as_deref(), Ok("/a;v/"));
        assert_eq!(normalize("/a/...;x").as_deref(), Ok("/a/...;x"));
    }
}
