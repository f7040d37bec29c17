//! The glob patterns of the ref and path brokering rules: `*` matches within one `/`-separated
//! segment, `**` across segments (`.github/workflows/**`, `refs/heads/bottle/b1/*`), `?` one
//! character other than `/`. Everything else is literal, so a pattern means what it shows.
//! Part of the contract: the model checks a Bottle's patterns with it, git-gate matches them.

/// Checks a pattern is one a user can mean: non-empty, one line, no `***`.
pub fn check(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    if pattern.contains(['\n', '\r', '\0']) {
        return Err("must be one line".into());
    }
    if pattern.contains("***") {
        return Err("has `***` (use `**` to cross `/`)".into());
    }
    Ok(())
}

/// Does `text` match `pattern` as a whole?
pub fn matches(pattern: &str, text: &str) -> bool {
    matches_at(pattern.as_bytes(), text.as_bytes())
}

fn matches_at(p: &[u8], t: &[u8]) -> bool {
    match p {
        [] => t.is_empty(),
        [b'*', b'*', rest @ ..] => {
            // `dir/**` also matches `dir` itself would surprise: it matches what is under it.
            (0..=t.len()).any(|i| matches_at(rest, &t[i..]))
        }
        [b'*', rest @ ..] => {
            let seg = t.iter().position(|&c| c == b'/').unwrap_or(t.len());
            (0..=seg).any(|i| matches_at(rest, &t[i..]))
        }
        [b'?', rest @ ..] => matches!(t, [c, tail @ ..] if *c != b'/' && matches_at(rest, tail)),
        [c, rest @ ..] => matches!(t, [d, tail @ ..] if c == d && matches_at(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_stay_in_their_segment_and_double_stars_cross() {
        assert!(matches(
            "refs/heads/bottle/b1/*",
            "refs/heads/bottle/b1/fix"
        ));
        assert!(!matches(
            "refs/heads/bottle/b1/*",
            "refs/heads/bottle/b1/a/b"
        ));
        assert!(!matches("refs/heads/bottle/b1/*", "refs/heads/main"));
        assert!(!matches(
            "refs/heads/bottle/b1/*",
            "refs/heads/bottle/b10/x"
        ));
        assert!(matches(".github/workflows/**", ".github/workflows/ci.yml"));
        assert!(matches(".github/workflows/**", ".github/workflows/a/b.yml"));
        assert!(!matches(".github/workflows/**", ".github/workflows"));
        assert!(!matches(
            ".github/workflows/**",
            "x/.github/workflows/ci.yml"
        ));
        assert!(matches("**/Makefile", "a/b/Makefile"));
        assert!(matches("*.lock", "Cargo.lock"));
        assert!(!matches("*.lock", "a/Cargo.lock"));
        assert!(matches("v?", "v1") && !matches("v?", "v12") && !matches("a?b", "a/b"));
        assert!(matches("main", "main") && !matches("main", "mainx"));
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check("refs/heads/*").is_ok());
        assert!(check("").is_err() && check("a\nb").is_err() && check("a/***").is_err());
    }
}
