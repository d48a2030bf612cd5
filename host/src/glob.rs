//! The one glob dialect of the config: policy patterns over clients, servers, methods, tool and
//! prompt names and resource URIs, and the method patterns plugins register for.
//!
//! - `*` any run of characters (`/` included: `*` alone means everything);
//! - `?` exactly one character;
//! - `[abc]`, `[a-z]`, `[!abc]` (or `[^abc]`) one character in, or not in, the class; a `]`
//!   right after the opening bracket is a member;
//! - `{read,list}_*` alternatives (they may nest);
//! - `\` takes the next character literally.
//!
//! Matching is by Unicode character and case-sensitive. A name is whatever a peer sends, so a
//! character is a character whatever its UTF-8 length and a newline is a character like any
//! other: `admin_?` matches `admin_é`, and `admin_*` matches `admin_\nx`. (globset, used before,
//! matches `?` and classes against single bytes: fuzzing found `get_?` not matching `get_é`.)

use std::sync::Arc;

use regex::Regex;

/// A compiled pattern. The common shapes (`*`, a plain name, `prefix*`, `*suffix`) match
/// without running a regex: a policy judges every entry of a list against its rules, so this is
/// per-entry work (a regex search costs ~50 ns even on a literal, a prefix test a few).
#[derive(Debug, Clone)]
pub struct Glob {
    text: Arc<str>,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Any,
    Exact(Arc<str>),
    Prefix(Arc<str>),
    Suffix(Arc<str>),
    /// `{a,b}_*`: one brace group of plain alternatives, each a plain shape.
    Either(Vec<Matcher>),
    Regex(Regex),
}

/// Whether `c` means something in a pattern (`,` only does inside braces).
fn is_special(c: char) -> bool {
    matches!(c, '*' | '?' | '\\' | '[' | ']' | '{' | '}')
}

/// Alternatives a brace group may expand to without a regex.
const MAX_ALTERNATIVES: usize = 16;

impl Matcher {
    /// The regex-free form of `text`, when it has one.
    fn plain(text: &str) -> Option<Matcher> {
        let literal = |s: &str| !s.contains(is_special);
        if text.chars().all(|c| c == '*') && !text.is_empty() {
            return Some(Matcher::Any);
        }
        if literal(text) {
            return Some(Matcher::Exact(text.into()));
        }
        let head = text.trim_end_matches('*');
        if literal(head) {
            return Some(Matcher::Prefix(head.into()));
        }
        let tail = text.trim_start_matches('*');
        if literal(tail) {
            return Some(Matcher::Suffix(tail.into()));
        }
        Self::braces(text)
    }

    /// One `{a,b,...}` group (no nesting, no other specials in it) whose every expansion is a
    /// plain shape without braces.
    fn braces(text: &str) -> Option<Matcher> {
        let open = text.find('{')?;
        let close = open + text[open..].find('}')?;
        let (before, group, after) = (&text[..open], &text[open + 1..close], &text[close + 1..]);
        if group.contains(is_special) || after.contains(['{', '}']) || before.contains('}') {
            return None;
        }
        let alternatives: Vec<&str> = group.split(',').collect();
        if alternatives.len() > MAX_ALTERNATIVES {
            return None;
        }
        alternatives
            .iter()
            .map(|alt| {
                let expanded = format!("{before}{alt}{after}");
                match Matcher::plain(&expanded)? {
                    Matcher::Either(_) | Matcher::Regex(_) => None,
                    m => Some(m),
                }
            })
            .collect::<Option<Vec<_>>>()
            .map(Matcher::Either)
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Exact(e) => name == &**e,
            Matcher::Prefix(p) => name.starts_with(&**p),
            Matcher::Suffix(s) => name.ends_with(&**s),
            Matcher::Either(all) => all.iter().any(|m| m.matches(name)),
            Matcher::Regex(r) => r.is_match(name),
        }
    }
}

impl Glob {
    pub fn new(text: &str) -> Result<Glob, String> {
        let matcher = match Matcher::plain(text) {
            Some(m) => m,
            None => Matcher::Regex(
                Regex::new(&translate(text)?)
                    .map_err(|e| format!("`{text}` is not a valid pattern: {e}"))?,
            ),
        };
        Ok(Glob {
            text: text.into(),
            matcher,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.matcher.matches(name)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Several patterns matched as one: whether any of them matches.
#[derive(Debug, Clone)]
pub struct GlobSet {
    regex: Regex,
}

impl GlobSet {
    /// `None` for no patterns (which match nothing).
    pub fn new(patterns: &[String]) -> Result<Option<GlobSet>, String> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut alternatives = Vec::with_capacity(patterns.len());
        for p in patterns {
            alternatives.push(translate(p)?);
        }
        let regex = Regex::new(&alternatives.join("|")).map_err(|e| e.to_string())?;
        Ok(Some(GlobSet { regex }))
    }

    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// The anchored regex (Unicode, `.` matching newlines) a pattern means; the error names the
/// pattern.
fn translate(glob: &str) -> Result<String, String> {
    regex_source(glob).map_err(|e| format!("`{glob}` is not a valid pattern: {e}"))
}

fn regex_source(glob: &str) -> Result<String, String> {
    let mut out = String::from(r"(?s:\A(?:");
    let mut chars = glob.chars().peekable();
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '\\' => match chars.next() {
                Some(escaped) => push_literal(&mut out, escaped),
                None => return Err("it ends in an unfinished escape `\\`".into()),
            },
            '[' => class(&mut chars, &mut out)?,
            '{' => {
                depth += 1;
                out.push_str("(?:");
            }
            ',' if depth > 0 => out.push('|'),
            '}' if depth > 0 => {
                depth -= 1;
                out.push(')');
            }
            '}' => return Err("`}` closes no `{`".into()),
            other => push_literal(&mut out, other),
        }
    }
    if depth > 0 {
        return Err("a `{` is never closed".into());
    }
    out.push_str(r")\z)");
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// A `[...]` class, its opening bracket already read.
fn class(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
) -> Result<(), String> {
    out.push('[');
    if matches!(chars.peek(), Some('!' | '^')) {
        chars.next();
        out.push('^');
    }
    let mut members = 0;
    loop {
        let c = match chars.next() {
            None => return Err("a `[` is never closed".into()),
            Some(']') if members > 0 => break,
            Some('\\') => chars
                .next()
                .ok_or_else(|| "it ends in an unfinished escape `\\`".to_string())?,
            Some(c) => c,
        };
        members += 1;
        push_class_member(out, c);
        // A range `a-z` (a `-` first, last or after a range is a member).
        let mut ahead = chars.clone();
        if ahead.next() == Some('-')
            && let Some(end) = ahead.next()
            && end != ']'
        {
            let end = if end == '\\' {
                ahead
                    .next()
                    .ok_or_else(|| "it ends in an unfinished escape `\\`".to_string())?
            } else {
                end
            };
            if end < c {
                return Err(format!("the range `{c}-{end}` is backwards"));
            }
            *chars = ahead;
            out.push('-');
            push_class_member(out, end);
        }
    }
    out.push(']');
    Ok(())
}

/// A character inside a regex class, escaped when the class syntax gives it a meaning.
fn push_class_member(out: &mut String, c: char) {
    if matches!(c, '\\' | '[' | ']' | '^' | '-' | '&' | '~') {
        out.push('\\');
    }
    out.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("a*", "a\nb", true),
            ("get_?", "get_é", true),
            ("get_?", "get_\u{591}", true),
            ("??", "é", false),
            ("[é]", "é", true),
            ("[!a]", "é", true),
            ("[^a]", "a", false),
            ("[]a]", "]", true),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[a-]", "-", true),
            ("[&&]", "&", true),
            ("{read,list}_*", "list_x", true),
            ("{a,{b,c}d}", "cd", true),
            ("{a,{b,c}d}", "c", false),
            ("a,b", "a,b", true),
            (r"\*", "*", true),
            (r"\*", "x", false),
            ("a.b", "axb", false),
            ("(x)|y", "(x)|y", true),
            ("(x)|y", "y", false),
            ("A*", "a", false),
        ];
        for (pattern, name, want) in cases {
            let glob = Glob::new(pattern).unwrap();
            assert_eq!(glob.matches(name), *want, "{pattern:?} ~ {name:?}");
        }
    }

    /// The regex-free shapes answer exactly what the pattern's regex answers.
    #[test]
    fn plain_shapes_agree_with_the_regex() {
        let patterns = [
            "*",
            "**",
            "",
            "exact",
            "search_*",
            "search_**",
            "*_issue",
            "**_issue",
            "a,b",
            "é*",
            "*é",
            "a.b*",
            "(x)*",
            "*|y",
            "{drop,truncate}_*",
            "{read,list}_file",
            "*_{a,b}",
            "{x,}y",
            "pre{,fix}",
        ];
        let names = [
            "drop_table",
            "truncate_",
            "drop",
            "read_file",
            "list_file",
            "list_files",
            "x_a",
            "x_b",
            "xy",
            "y",
            "pre",
            "prefix",
            "",
            "exact",
            "exactly",
            "search_",
            "search_code",
            "research_code",
            "create_issue",
            "issue",
            "a,b",
            "é",
            "éa",
            "aé",
            "a.bc",
            "axbc",
            "(x)",
            "x|y",
            "search_\ncode",
        ];
        for pattern in patterns {
            let glob = Glob::new(pattern).unwrap();
            assert!(
                !matches!(glob.matcher, Matcher::Regex(_)),
                "{pattern:?} should not need a regex"
            );
            let regex = Regex::new(&translate(pattern).unwrap()).unwrap();
            for name in names {
                assert_eq!(
                    glob.matches(name),
                    regex.is_match(name),
                    "{pattern:?} ~ {name:?}"
                );
            }
        }
        for pattern in [
            "*a*",
            "get_?",
            r"\*",
            "a[bc]*",
            "]*",
            "{a,{b,c}}",
            "{a*,b}",
            "*{a,b}*",
            "{a,b}{c,d}",
        ] {
            let glob = Glob::new(pattern).unwrap();
            assert!(matches!(glob.matcher, Matcher::Regex(_)), "{pattern:?}");
        }
    }

    #[test]
    fn refused_patterns_say_why() {
        for (pattern, why) in [
            ("[ab", "never closed"),
            ("{a,b", "never closed"),
            ("a}", "closes no"),
            ("a\\", "unfinished escape"),
            ("[z-a]", "backwards"),
        ] {
            let err = Glob::new(pattern).unwrap_err();
            assert!(err.contains(why), "{pattern}: {err}");
        }
    }

    #[test]
    fn sets_match_any() {
        let set = GlobSet::new(&["tools/*".into(), "ping".into()])
            .unwrap()
            .unwrap();
        assert!(set.matches("tools/call"));
        assert!(set.matches("ping"));
        assert!(!set.matches("pingx"));
        assert!(GlobSet::new(&[]).unwrap().is_none());
    }
}
