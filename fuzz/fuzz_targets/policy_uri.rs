//! Policy name patterns and the resource-URI normaliser.
//!
//! Patterns: compiling any text never panics; `*` matches everything; a pattern without glob
//! syntax matches exactly its own text; a pattern of literals, `*` and `?` matches what a
//! plain wildcard matcher says (differential). URIs: normalising is idempotent, and a normalised
//! URI has no dot segment in any spelling, so a rule on `file:///docs/*` sees the path the
//! server will open.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mcpgate::mcp::uri;
use mcpgate::stages::policy::Pattern;

#[derive(Arbitrary, Debug)]
struct Input {
    pattern: String,
    name: String,
    uri: String,
}

/// `*` (any run of characters) and `?` (one character) over chars, everything else literal.
fn wildcard(pattern: &[char], name: &[char]) -> bool {
    let mut matches = vec![false; name.len() + 1];
    matches[0] = true;
    for p in pattern {
        let mut next = vec![false; name.len() + 1];
        for i in 0..=name.len() {
            next[i] = match p {
                '*' => matches[i] || (i > 0 && next[i - 1]),
                '?' => i > 0 && matches[i - 1],
                c => i > 0 && matches[i - 1] && name[i - 1] == *c,
            };
        }
        matches = next;
    }
    matches[name.len()]
}

fuzz_target!(|input: Input| {
    if let Ok(p) = Pattern::new(&input.pattern) {
        let matched = p.matches(&input.name);
        let glob_syntax = |c: char| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\');
        let pattern: Vec<char> = input.pattern.chars().collect();
        let name: Vec<char> = input.name.chars().collect();
        if input.pattern == "*" {
            assert!(matched);
        } else if !pattern.iter().any(|c| glob_syntax(*c)) {
            assert_eq!(
                matched,
                input.pattern == input.name,
                "literal {:?} vs {:?}",
                input.pattern,
                input.name
            );
        } else if !pattern
            .iter()
            .any(|c| glob_syntax(*c) && *c != '*' && *c != '?')
        {
            assert_eq!(
                matched,
                wildcard(&pattern, &name),
                "{:?} vs {:?}",
                input.pattern,
                input.name
            );
        }
        // An escaped pattern matches exactly its text.
        let escaped: String = input.name.chars().flat_map(|c| ['\\', c]).collect();
        assert!(
            Pattern::new(&escaped)
                .expect("an escaped name is a pattern")
                .matches(&input.name)
        );
    }
    if let Ok(normal) = uri::normalize(&input.uri) {
        assert_eq!(
            uri::normalize(&normal).as_deref(),
            Ok(normal.as_str()),
            "not idempotent: {:?}",
            input.uri
        );
        assert!(!normal.bytes().any(|b| b.is_ascii_control()));
        // The path as the text spells it (not as a URL parser would resolve it again).
        let after_scheme = normal.split_once(':').map_or("", |(_, rest)| rest);
        // The query and fragment first: a `/` in them (even right after the authority,
        // `s://host?q/%2e`) is no path.
        let before_query = after_scheme.split(['?', '#']).next().unwrap_or("");
        let path = match before_query.strip_prefix("//") {
            Some(rest) => rest.find('/').map_or("", |i| &rest[i..]),
            None => before_query,
        };
        for segment in path.split('/') {
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            assert!(
                decoded != ".." && decoded != ".",
                "dot segment left in {normal:?} (from {:?})",
                input.uri
            );
        }
    }
});
