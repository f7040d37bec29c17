//! Request paths as the route allowlists understand them. Part of the contract: the model
//! checks a Bottle's declared path prefixes with it, and egress and cred-proxy normalise what
//! the agent sends with it, so a declared prefix is always one a request can match.

/// A path whose meaning could differ between this proxy and the upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {0:?} is ambiguously encoded")]
pub struct AmbiguousPath(pub String);

/// Decodes and normalises a request path (no query), refusing anything whose meaning could
/// differ between this proxy and the upstream: encoded `/`, `\` or `%` after one decoding
/// (double encoding), NUL, and `..` that would climb above the root.
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
