//! Resource URIs in the one form policies judge them in.
//!
//! A rule allowing `file:///docs/*` must not allow `file:///docs/../../etc/passwd`, and one
//! denying `file:///secret/*` must not be dodged by `FILE:///%73ecret/x` or
//! `file:///public/%2e%2e/secret/x`. So before any pattern sees a resource URI it is normalised
//! as RFC 3986 (section 6) and the WHATWG URL standard agree: scheme and host in lower case, dot
//! segments (`.`, `..`, and their percent-encoded spellings) resolved, default ports dropped,
//! percent-encoded characters that need no encoding decoded. What cannot be brought to one form
//! safely is refused, never guessed: relative references, an encoded `/`, `\` or NUL in the path
//! (a server that decodes them would see other segments than the policy did), double encoding
//! (`%252e`), control characters, dot segments in opaque URIs (`mcp:a/../b`), and a path
//! that begins with `//` without an authority (`d:/.//x`, which the URL standard must write with
//! a dot segment).

/// The octet a `%XX` escape's two hex digits spell: exactly two ASCII hex digits (Rust's
/// `from_str_radix` alone also takes a sign, so `%+f` would read as `%0f`, and a second pass
/// would then decode what the first left alone).
pub fn hex_octet(digits: &[u8]) -> Option<u8> {
    match digits {
        [a, b] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 16).ok()
        }
        _ => None,
    }
}

/// Whether a hex digit appended to `out` would make (part of) a `%XX` escape.
fn completes_escape(out: &str) -> bool {
    let b = out.as_bytes();
    match b {
        [.., b'%'] => true,
        [.., b'%', d] => d.is_ascii_hexdigit(),
        _ => false,
    }
}

/// `uri` normalised, or why it cannot be.
pub fn normalize(uri: &str) -> Result<String, String> {
    if uri.bytes().any(|b| b.is_ascii_control()) {
        return Err("it contains control characters".into());
    }
    let url = url::Url::parse(uri).map_err(|e| format!("it is not an absolute URI ({e})"))?;
    if url.cannot_be_a_base() && url.path().split('/').any(is_dot_segment) {
        return Err("it has dot segments in an opaque path".into());
    }
    // A path that begins with `//` where there is no authority (`d:/.//x`, `d:/a/..//x`) is
    // written `d:/.//x` by the URL standard, so it does not read as the authority `x`: a `.`
    // segment kept in the normal form, and one that reads as something else once its dot is
    // gone. Refused rather than judged in a form with a dot segment in it.
    if !url.cannot_be_a_base() && url.host().is_none() && url.path().starts_with("//") {
        return Err("its path begins with `//` and it has no authority".into());
    }
    let text = url.as_str();
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(octet) = bytes.get(i + 1..i + 3).and_then(hex_octet)
        {
            match octet {
                b'/' | b'\\' | 0 => {
                    return Err(format!(
                        "it encodes `{}` as {}",
                        (octet as char).escape_default(),
                        &text[i..i + 3]
                    ));
                }
                b'%' if bytes
                    .get(i + 3..i + 5)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                {
                    return Err(format!("it is percent-encoded twice ({})", &text[i..i + 5]));
                }
                // RFC 3986 unreserved characters mean the same encoded or not.
                // A decoded hex digit after a lone `%` spells a new escape (`%%33e` is `%3e`):
                // percent-encoding twice by another route, refused like `%25`.
                b'0'..=b'9' | b'A'..=b'F' | b'a'..=b'f' if completes_escape(&out) => {
                    return Err(format!(
                        "it is percent-encoded twice ({} completes an escape after `%`)",
                        &text[i..i + 3]
                    ));
                }
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(octet as char);
                }
                _ => out.push_str(&text[i..i + 3].to_ascii_uppercase()),
            }
            i += 3;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    // Decoding can only have produced a dot segment from a spelling the URL parser resolves
    // itself; check anyway rather than trust that.
    let path_start = out.find("://").map_or(0, |p| p + 3);
    if out[path_start..]
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .split('/')
        .any(|s| s == "..")
    {
        return Err("it still has `..` segments after decoding".into());
    }
    Ok(out)
}

fn is_dot_segment(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_two_hex_digits_and_nothing_else() {
        assert_eq!(hex_octet(b"2e"), Some(b'.'));
        assert_eq!(hex_octet(b"C3"), Some(0xc3));
        for bad in [&b"+f"[..], b"-1", b"f", b"fff", b"g0", b" 1", b""] {
            assert_eq!(hex_octet(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        for input in ["d:ee/%ee%+%66e3", "x:%+%66%+f", "s://h/%+1/%-0"] {
            let once = normalize(input).unwrap();
            assert_eq!(normalize(&once).as_deref(), Ok(once.as_str()), "{input}");
        }
    }

    #[test]
    fn normal_forms() {
        let cases: &[(&str, &str)] = &[
            ("file:///docs/a.md", "file:///docs/a.md"),
            ("file:///docs/../../etc/passwd", "file:///etc/passwd"),
            ("file:///docs/./a/../b.md", "file:///docs/b.md"),
            ("file:///docs/%2e%2e/etc/passwd", "file:///etc/passwd"),
            ("file:///docs/.%2E/etc/passwd", "file:///etc/passwd"),
            ("FILE:///%73ecret/x", "file:///secret/x"),
            (
                "HTTPS://Example.COM:443/a/%7euser",
                "https://example.com/a/~user",
            ),
            ("https://example.com/a%20b", "https://example.com/a%20b"),
            ("https://example.com/a%c3%a9", "https://example.com/a%C3%A9"),
            ("file:///docs/a..b", "file:///docs/a..b"),
            ("custom://host/x/../y", "custom://host/y"),
            ("urn:isbn:0451450523", "urn:isbn:0451450523"),
            ("postgres://db/users?limit=1", "postgres://db/users?limit=1"),
            ("https://example.com/100%25", "https://example.com/100%25"),
            // A `/` in the query is no path: no dot segment is resolved there, only the
            // unreserved `%2e` decoded (the policy_uri fuzz target's harness once read it as a
            // path).
            ("pd://host?:v/%2e", "pd://host?:v/."),
            ("pd://host/a/..?q=/../x", "pd://host/?q=/../x"),
            // `%+` is no escape, so nothing it is followed by completes one (the fuzz smoke
            // found `%+%66` normalised to `%+f`, which a second pass read as the escape `%+f`).
            ("d:ee/%ee%+%66e3", "d:ee/%EE%+fe3"),
            ("d:x/%-1", "d:x/%-1"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(*want), "{input}");
        }
    }

    #[test]
    fn what_cannot_be_normalised_is_refused() {
        for bad in [
            "docs/a.md",
            "../etc/passwd",
            "",
            "file:///docs%2F..%2Fetc/passwd",
            "file:///docs/%5c..%5cetc",
            "file:///docs/%252e%252e/etc/passwd",
            // A decoded hex digit completing an escape after a lone `%` (found by fuzzing: the
            // first pass gave `d:ee/%EE%3e`, the second `%3E`).
            "D:ee/%ee%%33e",
            "file:///docs/%%32e%%32e/etc/passwd",
            "file:///docs/%2%65",
            "file:///docs/a%00.md",
            "file:///docs/a\n.md",
            "mcp:docs/../secret",
            "mcp:docs/%2E%2E/secret",
            // A path that begins with `//` without an authority (found by fuzzing: the normal
            // form `d:/.//x` kept a `.` segment).
            "D:/.//x",
            "d:/a/..//x",
            "D:/./////'/9//e/%4e",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} -> {:?}", normalize(bad));
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let samples = [
            "%",
            "%z",
            "%e9",
            "a:%",
            "file:///%",
            "file:///é%",
            "x:/%2",
            "\u{10ffff}:x",
        ];
        for s in samples {
            let _ = normalize(s);
        }
        // Every prefix of a tricky URI.
        let tricky = "HTTPS://Ex%41mple.com:443/a/%2e%2E/b%c3%a9/%7E?q=%25#f";
        for end in 0..=tricky.len() {
            if tricky.is_char_boundary(end) {
                let _ = normalize(&tricky[..end]);
            }
        }
    }
}
