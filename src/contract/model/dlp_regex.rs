//! The regex dialect a Bottle's DLP patterns must be written in: the part of Rust's syntax
//! that Go's RE2 (`regexp`, used by pipelock and gitleaks alike) reads the same way.
//!
//! A pattern is parsed with `regex-syntax` and its AST walked; anything Go refuses, or reads
//! differently, is refused here with a message saying what to write instead, so a bad pattern
//! becomes a condition on the Bottle instead of a crash-looping pipelock (which exits on a
//! regex `regexp.Compile` rejects) or a git-gate that cannot load its rules.
//!
//! What pipelock does differently anyway, even for patterns accepted here: it matches
//! case-insensitively, prefixing `(?i)` to every DLP pattern that does not already start with
//! it (internal/scanner/scanner.go, `New`), while gitleaks matches them as written. `\d`, `\w`,
//! `\s` and `\b` are ASCII-only in Go and Unicode-aware in Rust, and Go's `\s` leaves out the
//! vertical tab (`[\t\n\f\r ]`); the scanners are Go, so Go's reading is the one that counts.

use regex_syntax::ast::{
    self, AssertionKind, Ast, ClassSet, ClassSetItem, ClassUnicodeKind, ErrorKind, Flag,
    FlagsItemKind, GroupKind, HexLiteralKind, LiteralKind, RepetitionKind, RepetitionRange,
};

/// RE2's largest repetition count (Go: `invalid repeat count` above it).
pub const MAX_REPEAT: u32 = 1000;

/// Unicode general categories Go knows by exactly these names (`unicode.Categories`); Rust
/// accepts many more spellings and properties.
const UNICODE_CATEGORIES: &[&str] = &[
    "Any", "L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P",
    "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp",
    "C", "Cc", "Cf", "Co", "Cs",
];

/// Scripts (`unicode.Scripts`) both read alike, spelled the way Go wants.
const UNICODE_SCRIPTS: &[&str] = &[
    "Latin",
    "Greek",
    "Cyrillic",
    "Han",
    "Arabic",
    "Hebrew",
    "Hiragana",
    "Katakana",
    "Hangul",
    "Thai",
    "Devanagari",
    "Armenian",
    "Georgian",
];

/// Checks that `regex` means the same to Go's RE2 as to Rust; the error says what is wrong
/// and what to write instead.
pub fn check(regex: &str) -> Result<(), String> {
    let parsed = ast::parse::ParserBuilder::new()
        .build()
        .parse(regex)
        .map_err(|e| parse_error(&e))?;
    walk(&parsed, regex, 1)
}

fn parse_error(e: &ast::Error) -> String {
    match e.kind() {
        ErrorKind::UnsupportedLookAround => "uses look-around ((?=, (?!, (?<=, (?<!), which RE2 \
             (pipelock, gitleaks) does not support; match the surrounding text instead, or use \
             a character class or \\b"
            .into(),
        ErrorKind::UnsupportedBackreference => "uses a backreference (\\1), which RE2 does not \
             support; spell the repeated text out (octal escapes are not accepted either: \
             write \\x{..})"
            .into(),
        _ => format!("does not parse as a regular expression: {}", e.kind()),
    }
}

/// Walks the AST; `scale` is the product of the repetition counts around this node.
fn walk(node: &Ast, src: &str, scale: u64) -> Result<(), String> {
    match node {
        Ast::Empty(_) | Ast::Dot(_) | Ast::ClassPerl(_) => Ok(()),
        Ast::Flags(f) => flags(&f.flags),
        Ast::Literal(l) => literal(l),
        Ast::Assertion(a) => assertion(&a.kind),
        Ast::ClassUnicode(u) => unicode(&u.kind),
        Ast::ClassBracketed(c) => bracketed(&c.kind),
        Ast::Repetition(r) => repetition(r, src, scale),
        Ast::Group(g) => {
            match &g.kind {
                GroupKind::CaptureIndex(_) => {}
                GroupKind::CaptureName { name, .. } => capture_name(&name.name)?,
                GroupKind::NonCapturing(f) => flags(f)?,
            }
            walk(&g.ast, src, scale)
        }
        Ast::Alternation(a) => a.asts.iter().try_for_each(|n| walk(n, src, scale)),
        Ast::Concat(c) => c.asts.iter().try_for_each(|n| walk(n, src, scale)),
    }
}

fn flags(f: &ast::Flags) -> Result<(), String> {
    for item in &f.items {
        let (c, name) = match &item.kind {
            FlagsItemKind::Negation => continue,
            FlagsItemKind::Flag(Flag::CaseInsensitive | Flag::MultiLine) => continue,
            FlagsItemKind::Flag(Flag::DotMatchesNewLine | Flag::SwapGreed) => continue,
            FlagsItemKind::Flag(Flag::Unicode) => ('u', "Unicode mode"),
            FlagsItemKind::Flag(Flag::CRLF) => ('R', "CRLF mode"),
            FlagsItemKind::Flag(Flag::IgnoreWhitespace) => ('x', "verbose mode"),
        };
        return Err(format!(
            "uses the flag {c} ({name}), which RE2 does not have; RE2 knows only i, m, s and U{}",
            if c == 'x' {
                ": remove the flag, the spaces and the comments"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

fn literal(l: &ast::Literal) -> Result<(), String> {
    match &l.kind {
        LiteralKind::HexFixed(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong)
        | LiteralKind::HexBrace(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong) => {
            Err(format!(
                "uses a \\u or \\U escape, which RE2 does not have; write \\x{{{:X}}}",
                u32::from(l.c)
            ))
        }
        LiteralKind::Octal => Err("uses an octal escape; write \\x{..}".into()),
        _ => Ok(()),
    }
}

fn assertion(kind: &AssertionKind) -> Result<(), String> {
    let (spelled, instead) = match kind {
        AssertionKind::StartLine
        | AssertionKind::EndLine
        | AssertionKind::StartText
        | AssertionKind::EndText
        | AssertionKind::WordBoundary
        | AssertionKind::NotWordBoundary => return Ok(()),
        // Go reads `\<` and `\>` as the literal characters < and >.
        AssertionKind::WordBoundaryStartAngle => ("\\<", "\\b"),
        AssertionKind::WordBoundaryEndAngle => ("\\>", "\\b"),
        AssertionKind::WordBoundaryStart => ("\\b{start}", "\\b"),
        AssertionKind::WordBoundaryEnd => ("\\b{end}", "\\b"),
        AssertionKind::WordBoundaryStartHalf => ("\\b{start-half}", "\\b"),
        AssertionKind::WordBoundaryEndHalf => ("\\b{end-half}", "\\b"),
    };
    Err(format!(
        "uses {spelled}, a Rust-only assertion that RE2 refuses or reads as a literal; write {instead}"
    ))
}

fn unicode(kind: &ClassUnicodeKind) -> Result<(), String> {
    let name = match kind {
        ClassUnicodeKind::OneLetter(c) => c.to_string(),
        ClassUnicodeKind::Named(n) => n.strip_prefix('^').unwrap_or(n).to_string(),
        ClassUnicodeKind::NamedValue { name, value, .. } => {
            return Err(format!(
                "uses the Unicode property \\p{{{name}={value}}}, which RE2 does not have; use a \
                 general category (\\p{{L}}, \\p{{Nd}}) or a script name (\\p{{Greek}})"
            ));
        }
    };
    if UNICODE_CATEGORIES.contains(&name.as_str()) || UNICODE_SCRIPTS.contains(&name.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "uses the Unicode class \\p{{{name}}}, a name RE2 may not know or spells \
             differently; use a general category (\\p{{L}}, \\p{{Nd}}) or one of: {}",
            UNICODE_SCRIPTS.join(", ")
        ))
    }
}

fn bracketed(set: &ClassSet) -> Result<(), String> {
    match set {
        ClassSet::BinaryOp(op) => Err(format!(
            "uses the class operator {}, which Rust treats as set {} but RE2 reads as literal \
             characters; write the resulting class out, e.g. [a-f] instead of [a-z&&a-f]",
            match op.kind {
                ast::ClassSetBinaryOpKind::Intersection => "&&",
                ast::ClassSetBinaryOpKind::Difference => "--",
                ast::ClassSetBinaryOpKind::SymmetricDifference => "~~",
            },
            match op.kind {
                ast::ClassSetBinaryOpKind::Intersection => "intersection",
                ast::ClassSetBinaryOpKind::Difference => "difference",
                ast::ClassSetBinaryOpKind::SymmetricDifference => "symmetric difference",
            }
        )),
        ClassSet::Item(item) => class_item(item),
    }
}

fn class_item(item: &ClassSetItem) -> Result<(), String> {
    match item {
        ClassSetItem::Empty(_) | ClassSetItem::Ascii(_) | ClassSetItem::Perl(_) => Ok(()),
        ClassSetItem::Literal(l) => literal(l),
        ClassSetItem::Range(r) => literal(&r.start).and_then(|()| literal(&r.end)),
        ClassSetItem::Unicode(u) => unicode(&u.kind),
        // The outermost class arrives through `bracketed`, so any class here is nested.
        ClassSetItem::Bracketed(_) => Err(nested_class()),
        ClassSetItem::Union(u) => u.items.iter().try_for_each(class_item),
    }
}

fn nested_class() -> String {
    "nests a class inside a class ([a[b]]), which RE2 reads as the class [a[b] followed by a \
     literal ]; write one flat class, e.g. [ab]"
        .into()
}

fn repetition(r: &ast::Repetition, src: &str, scale: u64) -> Result<(), String> {
    // Go refuses `a**` and `a{2}{3}`: a repetition directly over a repetition.
    if matches!(*r.ast, Ast::Repetition(_)) {
        return Err(
            "repeats a repetition directly (a** or a{2}{3}), which RE2 refuses; wrap \
                    the inner one in a group: (?:a*)*"
                .into(),
        );
    }
    let count = match &r.op.kind {
        RepetitionKind::ZeroOrOne | RepetitionKind::ZeroOrMore | RepetitionKind::OneOrMore => 1,
        RepetitionKind::Range(range) => {
            let op = &src[r.op.span.start.offset..r.op.span.end.offset];
            let (lo, hi) = match *range {
                RepetitionRange::Exactly(n) => (n, n),
                RepetitionRange::AtLeast(n) => (n, n),
                RepetitionRange::Bounded(a, b) => (a, b),
            };
            if lo > MAX_REPEAT || hi > MAX_REPEAT {
                return Err(format!(
                    "uses the repetition count {op}, above RE2's limit of {MAX_REPEAT}; use a \
                     smaller bound or + / *"
                ));
            }
            u64::from(hi.max(1))
        }
    };
    let scale = scale * count;
    // Nested counts multiply (RE2 expands them), and Go refuses programs that grow too large.
    if scale > u64::from(MAX_REPEAT) {
        return Err(format!(
            "nests repetition counts whose product ({scale}) is above {MAX_REPEAT}; RE2 expands \
             counted repetitions and refuses or slows down on large ones: use + or *"
        ));
    }
    walk(&r.ast, src, scale)
}

fn capture_name(name: &str) -> Result<(), String> {
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "names a group {name:?}; RE2 group names are letters, digits and _ only"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    fn refused(re: &str, says: &str) {
        let err = check(re).expect_err(re);
        assert!(err.contains(says), "{re}: {err}");
    }

    #[test]
    fn refuses_what_re2_does_not_support() {
        refused("foo(?=bar)", "look-around");
        refused("foo(?!bar)", "look-around");
        refused("(?<=x)foo", "look-around");
        refused("(?<!x)foo", "look-around");
        refused(r"(a)\1", "backreference");
        refused(r"\x{0}\0", "backreference");
        refused("a(", "does not parse");
    }

    #[test]
    fn refuses_rust_only_class_syntax() {
        refused("[a-z&&[^aeiou]]", "&&");
        refused("[a-z--b]", "--");
        refused("[a-z~~b]", "~~");
        refused("[a[b]]", "nests a class");
        refused("[[ab]c]", "nests a class");
        refused(r"\p{Letter}", "Unicode class");
        refused(r"\p{sc=Greek}", "Unicode property");
        refused(r"\p{greek}", "Unicode class");
    }

    #[test]
    fn refuses_rust_only_assertions_escapes_and_flags() {
        refused(r"\<word\>", r"\<");
        refused(r"word\>", r"\>");
        refused(r"\b{start}x", r"\b{start}");
        refused(r"x\b{end}", r"\b{end}");
        refused(r"\b{start-half}x", "start-half");
        refused(r"\u0041", r"\x{41}");
        refused(r"\U{1F600}", r"\x{1F600}");
        refused("(?x) a b", "verbose");
        refused("(?u)a", "Unicode mode");
        refused("(?R)a$", "CRLF");
        refused("(?<a.b>x)", "group names");
    }

    #[test]
    fn refuses_repetitions_re2_refuses_or_reads_differently() {
        refused("a{1001}", "limit of 1000");
        refused("a{2,1001}", "limit of 1000");
        refused("a{1001,}", "limit of 1000");
        refused("(?:a{100}){11}", "product (1100)");
        // Go would read it as literal text; regex-syntax 0.8.12 refuses it already.
        refused("a{,5}", "does not parse");
        refused("a**", "repeats a repetition");
        refused("a{2}{3}", "repeats a repetition");
    }

    #[test]
    fn accepts_the_tricky_constructs_both_read_alike() {
        for re in [
            r"\d{4}",
            r"excorp_[A-Za-z0-9]{32}",
            "(?i)secret",
            "(?i:ab)c(?-i)d",
            "(?P<tok>[a-f0-9]{40})",
            "(?<tok>x)",
            "(?:ab|cd)+?",
            r"^AKIA[0-9A-Z]{16}$",
            r"\Atoken\z",
            r"\bkey\B",
            "(?m)^x$",
            "(?s).+",
            "(?U)a+",
            r"[[:alpha:]][[:^digit:]]",
            r"\p{L}\pN\p{Greek}\P{Lu}\p{^Han}",
            r"[\d\s\w-]",
            r"\x41\x{263a}\t\n",
            r"\.\-\#\&\~",
            "a{1000}",
            "(?:a{10}){100}",
            "a{0,1000}",
            "[]a]",
            "(?:a*)*",
            "a|",
        ] {
            assert_eq!(check(re), Ok(()), "{re}");
        }
    }
}
