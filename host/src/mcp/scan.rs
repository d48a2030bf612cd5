//! A single-pass walk over JSON text by byte offsets: the members of an object and the elements
//! of an array as spans of the text, without building values. For large messages the gateway
//! must look into but not rewrite (a filtered `tools/list`: only each entry's name is read),
//! one scan replaces the several `serde_json` passes that reading nested raw values takes.
//!
//! Two modes. A [`Cursor::new`] walk checks the structure of what it enters (brackets, colons,
//! commas, string ends) and skips the rest by counting brackets: for text already checked once.
//! A [`Cursor::strict`] walk (and [`check`]) accepts exactly what `serde_json` accepts: every
//! string's escapes and control characters, number syntax, literals, the structure of skipped
//! values, and nesting as deep as `serde_json` reads into a tree (127 containers), so a walk that
//! reads a message can also be the one pass that checks it (the response hooks defer a large
//! result's check to the policy's list walk). Neither ever panics, whatever the input.

use std::borrow::Cow;

/// Why a walk stopped: the text is not the JSON it expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(pub &'static str);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

type Result<T> = std::result::Result<T, ScanError>;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `x` (eight of the text, little-endian) that end a plain run in a string: `"`,
/// `\\` and, when `strict`, control characters. Nonzero when there is one; its lowest set bit
/// marks the first such byte exactly (the usual zero-byte test: a borrow can only mark bytes
/// above a true one).
fn string_stops(x: u64, strict: bool) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let stops = zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\')));
    if strict {
        stops | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
    } else {
        stops
    }
}

/// The end (after the closing quote) of the string opening at `i`, eight bytes at a time.
/// `strict`: its escapes must be JSON's and it may hold no control character.
fn skip_string(b: &[u8], i: usize, strict: bool) -> Result<usize> {
    let mut j = i + 1;
    loop {
        while let Some(chunk) = b.get(j..j + 8) {
            let stops = string_stops(u64::from_le_bytes(chunk.try_into().unwrap()), strict);
            if stops != 0 {
                j += (stops.trailing_zeros() / 8) as usize;
                break;
            }
            j += 8;
        }
        match b.get(j) {
            None => return Err(ScanError("an unterminated string")),
            Some(b'"') => return Ok(j + 1),
            Some(b'\\') if strict => j = check_escape(b, j)?,
            // An escape: the next byte is escaped whatever it is.
            Some(b'\\') => j += 2,
            Some(c) if strict && *c < 0x20 => {
                return Err(ScanError("a control character in a string"));
            }
            Some(_) => j += 1,
        }
    }
}

/// The end of the escape at `i` (a backslash), which must be one of JSON's.
fn check_escape(b: &[u8], i: usize) -> Result<usize> {
    match b.get(i + 1) {
        None => Err(ScanError("an unterminated string")),
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => match b.get(i + 2..i + 6) {
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(i + 6),
            Some(_) => Err(ScanError("a bad \\u escape")),
            None => Err(ScanError("an unterminated string")),
        },
        Some(_) => Err(ScanError("a bad escape")),
    }
}

/// The end of the run of ASCII digits at `i` (at least one).
fn digits(b: &[u8], i: usize) -> Result<usize> {
    let n = b
        .get(i..)
        .unwrap_or_default()
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n == 0 {
        Err(ScanError("a bad number"))
    } else {
        Ok(i + n)
    }
}

/// The end of the number at `i`, in JSON's grammar (`-`, no leading zeros, a fraction and an
/// exponent each with digits).
fn check_number(b: &[u8], i: usize) -> Result<usize> {
    let mut j = i;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    j = match b.get(j) {
        Some(b'0') => j + 1,
        Some(b'1'..=b'9') => digits(b, j)?,
        _ => return Err(ScanError("a bad number")),
    };
    if b.get(j) == Some(&b'.') {
        j = digits(b, j + 1)?;
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        j = digits(b, j)?;
    }
    Ok(j)
}

/// `serde_json`'s nesting limit: the 128th container inside one another is refused.
const DEPTH: usize = 128;

/// One more container level under `depth` levels left: what is left then.
fn descend(depth: usize) -> Result<usize> {
    match depth.checked_sub(1) {
        Some(left) if left > 0 => Ok(left),
        _ => Err(ScanError("nesting deeper than 127 levels")),
    }
}

/// The end of the value at `i`, checked as `serde_json` reads it, with `depth` levels of
/// nesting left: a scalar here, a container by a strict [`Cursor`] (the same structure checks as
/// every walk, and the scalars inside back here).
fn check_value(text: &str, i: usize, depth: usize) -> Result<usize> {
    let b = text.as_bytes();
    let object = match b.get(i) {
        None => return Err(ScanError("a value is missing")),
        Some(b'"') => return skip_string(b, i, true),
        Some(b'-' | b'0'..=b'9') => return check_number(b, i),
        Some(b't' | b'f' | b'n') => {
            return ["true", "false", "null"]
                .iter()
                .find(|lit| b[i..].starts_with(lit.as_bytes()))
                .map(|lit| i + lit.len())
                .ok_or(ScanError("a bad literal"));
        }
        Some(b'{') => true,
        Some(b'[') => false,
        Some(_) => return Err(ScanError("not a JSON value")),
    };
    let mut c = Cursor {
        text,
        i,
        strict: true,
        depth,
    };
    if object {
        c.object(|c, _| c.skip().map(drop))?;
    } else {
        c.array(|c| c.skip().map(drop))?;
    }
    Ok(c.i)
}

/// Whether `text` is one JSON value (surrounding whitespace allowed) as `serde_json` reads it.
pub fn check(text: &str) -> Result<()> {
    let b = text.as_bytes();
    let end = check_value(text, skip_ws(b, 0), DEPTH)?;
    if skip_ws(b, end) == b.len() {
        Ok(())
    } else {
        Err(ScanError("text after the value"))
    }
}

/// The end of the value starting at `i` (no leading whitespace).
fn skip_value(b: &[u8], i: usize) -> Result<usize> {
    match b.get(i) {
        None => Err(ScanError("a value is missing")),
        Some(b'"') => skip_string(b, i, false),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j) {
                    None => return Err(ScanError("an unterminated object or array")),
                    Some(b'"') => {
                        j = skip_string(b, j, false)?;
                        continue;
                    }
                    Some(b'{' | b'[') => depth += 1,
                    Some(b'}' | b']') => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    Some(_) => {}
                }
                j += 1;
            }
        }
        Some(_) => {
            // A number or a literal: up to the next delimiter.
            let end = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .map_or(b.len(), |k| i + k);
            if end == i {
                Err(ScanError("a value is missing"))
            } else {
                Ok(end)
            }
        }
    }
}

/// The text of a JSON string (with its quotes), unescaped only when it has escapes.
pub fn string_text(quoted: &str) -> Result<Cow<'_, str>> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or(ScanError("not a string"))?;
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(quoted)
        .map(Cow::Owned)
        .map_err(|_| ScanError("a string with a bad escape"))
}

/// One member of an object: its key (quoted, as written) and its value, as spans of the text.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

impl<'a> Member<'a> {
    /// Whether the key, unescaped, is `name`.
    pub fn is(&self, name: &str) -> bool {
        key_is(self.key, name)
    }
}

/// A position in JSON text, walked forward once: objects and arrays are entered with a callback
/// per member or element, which must consume the value at the cursor (by [`Cursor::skip`], or by
/// entering it). Nested values are read in the same pass as their parents.
pub struct Cursor<'a> {
    text: &'a str,
    i: usize,
    /// Whether everything walked is checked as `serde_json` reads it.
    strict: bool,
    /// Levels of nesting left (strict walks).
    depth: usize,
}

impl<'a> Cursor<'a> {
    /// A walk over text already checked once: what it skips, it skips by counting brackets.
    pub fn new(text: &'a str) -> Cursor<'a> {
        let mut c = Cursor {
            text,
            i: 0,
            strict: false,
            depth: DEPTH,
        };
        c.ws();
        c
    }

    /// A walk that checks everything it passes, entered or skipped, as [`check`] does: when it
    /// reaches [`Cursor::end`] without an error, the text is JSON as `serde_json` reads it.
    pub fn strict(text: &'a str) -> Cursor<'a> {
        Cursor {
            strict: true,
            ..Cursor::new(text)
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn ws(&mut self) {
        self.i = skip_ws(self.bytes(), self.i);
    }

    /// The first byte of the value at the cursor.
    pub fn peek(&self) -> Option<u8> {
        self.bytes().get(self.i).copied()
    }

    /// The offset of the cursor in the text.
    pub fn pos(&self) -> usize {
        self.i
    }

    /// Skips the value at the cursor; its span.
    pub fn skip(&mut self) -> Result<&'a str> {
        if self.strict {
            self.skip_with(check_value)
        } else {
            self.skip_with(|text, i, _| skip_value(text.as_bytes(), i))
        }
    }

    /// Skips the value at the cursor by counting brackets, unchecked even in a strict walk (its
    /// span: for a value some later walk will check).
    pub fn skip_unchecked(&mut self) -> Result<&'a str> {
        self.skip_with(|text, i, _| skip_value(text.as_bytes(), i))
    }

    fn skip_with(&mut self, end: impl Fn(&str, usize, usize) -> Result<usize>) -> Result<&'a str> {
        let start = self.i;
        self.i = end(self.text, start, self.depth)?;
        Ok(&self.text[start..self.i])
    }

    /// Enters the object at the cursor: `each(cursor, key)` for every member, in order, with the
    /// cursor at the member's value and `key` quoted as written.
    pub fn object(
        &mut self,
        mut each: impl FnMut(&mut Cursor<'a>, &'a str) -> Result<()>,
    ) -> Result<()> {
        if !self.open(b'{', b'}', "not an object")? {
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(ScanError("an object key is not a string"));
            }
            let key_end = skip_string(self.bytes(), self.i, self.strict)?;
            let key = &self.text[self.i..key_end];
            self.i = skip_ws(self.bytes(), key_end);
            if self.peek() != Some(b':') {
                return Err(ScanError("a key without a value"));
            }
            self.i = skip_ws(self.bytes(), self.i + 1);
            let start = self.i;
            each(self, key)?;
            let more = self.next(
                start,
                b'}',
                "a member's value was not read",
                "an object member is not followed by `,` or `}`",
            )?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Enters the array at the cursor: `each(cursor)` for every element, with the cursor at it.
    pub fn array(&mut self, mut each: impl FnMut(&mut Cursor<'a>) -> Result<()>) -> Result<()> {
        if !self.open(b'[', b']', "not an array")? {
            return Ok(());
        }
        loop {
            let start = self.i;
            each(self)?;
            let more = self.next(
                start,
                b']',
                "an element was not read",
                "an array element is not followed by `,` or `]`",
            )?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Opens the object or array at the cursor (`open` ... `close`): whether it has entries (an
    /// empty one is read whole).
    fn open(&mut self, open: u8, close: u8, not: &'static str) -> Result<bool> {
        if self.peek() != Some(open) {
            return Err(ScanError(not));
        }
        if self.strict {
            self.depth = descend(self.depth)?;
        }
        self.i = skip_ws(self.bytes(), self.i + 1);
        if self.peek() == Some(close) {
            self.close();
            return Ok(false);
        }
        Ok(true)
    }

    /// Past the closing bracket at the cursor: a level up.
    fn close(&mut self) {
        self.i += 1;
        if self.strict {
            self.depth += 1;
        }
    }

    /// After an entry whose value began at `start`: whether another follows (`,`), or the
    /// container ended (`close`, read).
    fn next(
        &mut self,
        start: usize,
        close: u8,
        unread: &'static str,
        unterminated: &'static str,
    ) -> Result<bool> {
        if self.i == start {
            return Err(ScanError(unread));
        }
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i = skip_ws(self.bytes(), self.i + 1);
                Ok(true)
            }
            Some(c) if c == close => {
                self.close();
                Ok(false)
            }
            _ => Err(ScanError(unterminated)),
        }
    }

    /// Succeeds when only whitespace is left.
    pub fn end(mut self) -> Result<()> {
        self.ws();
        if self.i == self.text.len() {
            Ok(())
        } else {
            Err(ScanError("text after the value"))
        }
    }
}

/// The members of the object `text` (surrounding whitespace allowed), in order, repeats kept.
pub fn members(text: &str) -> Result<Vec<Member<'_>>> {
    let mut out = Vec::new();
    let mut c = Cursor::new(text);
    c.object(|c, key| {
        let value = c.skip()?;
        out.push(Member { key, value });
        Ok(())
    })?;
    c.end()?;
    Ok(out)
}

/// The elements of the array `text` (surrounding whitespace allowed), as spans.
pub fn elements(text: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    let mut c = Cursor::new(text);
    c.array(|c| {
        out.push(c.skip()?);
        Ok(())
    })?;
    c.end()?;
    Ok(out)
}

/// Whether the quoted key `key`, unescaped, is `name`.
pub fn key_is(key: &str, name: &str) -> bool {
    match key.as_bytes() {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => same_bytes(inner, name.as_bytes()),
        _ => string_text(key).is_ok_and(|k| k == name),
    }
}

/// `a == b`, byte by byte: keys and names are a few bytes long, and slice equality calls libc's
/// `memcmp`, whose vector compare was a fifth of the gateway's CPU on a 1,000-tool list (`perf
/// annotate`: the first 256-bit compare of each call, stalling on the vector unit's wake-up).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk sees the members and elements serde_json sees, spans included.
    #[test]
    fn agrees_with_serde_json() {
        let objects = [
            r#"{}"#,
            r#" { "a" : 1 , "b":[1,2,{"c":"}]"}] ,"d":{"e":null}} "#,
            r#"{"q\"uote":"x\\","t\u006fols":[],"n":-1.5e-3,"t":true,"f":false}"#,
            r#"{"s":"brackets ] } [ { and \" and \\\" inside","u":"é😀"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"deep":[[[[{"x":[{}]}]]]]}"#,
        ];
        for text in objects {
            let ours = members(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let theirs: Vec<(String, &serde_json::value::RawValue)> = {
                // serde_json's own reading, repeats kept.
                struct Pairs<'a>(Vec<(String, &'a serde_json::value::RawValue)>);
                impl<'de> serde::Deserialize<'de> for Pairs<'de> {
                    fn deserialize<D: serde::Deserializer<'de>>(
                        d: D,
                    ) -> std::result::Result<Self, D::Error> {
                        struct V;
                        impl<'de> serde::de::Visitor<'de> for V {
                            type Value = Pairs<'de>;
                            fn expecting(
                                &self,
                                f: &mut std::fmt::Formatter<'_>,
                            ) -> std::fmt::Result {
                                f.write_str("an object")
                            }
                            fn visit_map<A: serde::de::MapAccess<'de>>(
                                self,
                                mut m: A,
                            ) -> std::result::Result<Pairs<'de>, A::Error>
                            {
                                let mut out = Vec::new();
                                while let Some(k) = m.next_key::<String>()? {
                                    out.push((k, m.next_value()?));
                                }
                                Ok(Pairs(out))
                            }
                        }
                        d.deserialize_map(V)
                    }
                }
                serde_json::from_str::<Pairs<'_>>(text).unwrap().0
            };
            assert_eq!(ours.len(), theirs.len(), "{text}");
            for (m, (k, v)) in ours.iter().zip(&theirs) {
                assert_eq!(string_text(m.key).unwrap(), *k, "{text}");
                assert!(m.is(k), "{text}: {k}");
                assert_eq!(m.value, v.get(), "{text}");
            }
        }
        let array = r#"[ 1, "two" ,{"three":[3]}, [], null ,-0.5 ]"#;
        let theirs: Vec<&serde_json::value::RawValue> = serde_json::from_str(array).unwrap();
        let ours = elements(array).unwrap();
        assert_eq!(
            ours,
            theirs.iter().map(|r| r.get()).collect::<Vec<_>>(),
            "{array}"
        );
        assert!(elements("[]").unwrap().is_empty());
    }

    /// Whether serde_json reads `text` as one value (what a strict walk must agree with).
    fn serde_reads(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    /// A strict walk accepts exactly what serde_json accepts: strings' escapes and control
    /// characters, numbers, literals, the structure inside skipped values, nesting depth.
    #[test]
    fn strict_checks_agree_with_serde_json() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deep_in_object = |n: usize| format!(r#"{{"a":{}}}"#, deep(n - 1));
        let texts: Vec<String> = [
            r#"{}"#,
            r#" {"a" : [1, -0, 0.5, -1.5e-3, 2E+10, 1e5, true, false, null, "x"] } "#,
            r#"{"s":"\" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00 é😀"}"#,
            r#"{"long":"a string longer than eight bytes, with \"escapes\" and 中文 past them"}"#,
            r#"{"a":1,"a":2}"#,
            r#""just a string""#,
            "12",
            "[]",
            "[{}]",
            r#"{"a":"bad \q escape"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"tab\tinside\"}",
            "{\"a\":\"newline\ninside in a long string to pass the eight-byte path\"}",
            "{\"a\":\"nul\u{0}\"}",
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e+}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nulll}"#,
            r#"{"a":NaN}"#,
            r#"{"a":{"b" 1}}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":[1}"#,
            r#"{"a":{1:2}}"#,
            r#"{"a":'x'}"#,
            r#"{"a":1}}"#,
            r#"{"a":1} x"#,
            "",
            " ",
            r#"{"a":"unterminated"#,
            r#"{"a":"ends in a backslash\"#,
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        // Nesting: serde_json skips any depth (`IgnoredAny` keeps a stack on the heap) but reads
        // no deeper than 127 containers into a tree; a strict walk, which recurses, stops there
        // too.
        let mut deep_texts = Vec::new();
        for n in [1, 126, 127, 128, 129, 100_000] {
            deep_texts.push(deep(n));
            deep_texts.push(deep_in_object(n));
        }
        for text in &deep_texts {
            let tree = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(
                check(text).is_ok(),
                tree,
                "check, {} bytes deep",
                text.len()
            );
        }
        for text in &texts {
            let theirs = serde_reads(text);
            assert_eq!(check(text).is_ok(), theirs, "check {text:?}");
            // A strict walk that enters the top-level object agrees too.
            if text.trim_start().starts_with('{') {
                let walked = (|| {
                    let mut c = Cursor::strict(text);
                    c.object(|c, _| c.skip().map(drop))?;
                    c.end()
                })();
                assert_eq!(walked.is_ok(), theirs, "strict walk {text:?}");
            }
        }
        // The fast walk (for checked text) skips what it does not enter, unchecked.
        assert!(members(r#"{"a":{"b" 1}}"#).is_ok());
        assert!(Cursor::strict(r#"{"a":{"b" 1}}"#).skip().is_err());
    }

    /// Broken text is an error, never a panic or a wrong span.
    #[test]
    fn broken_text_is_an_error() {
        for text in [
            "",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":1,}x",
            "{\"a\":\"unterminated}",
            "{\"a\":[1,2}",
            "{\"a\":1} trailing",
            "[1,",
            "[1 2]",
            "\"x\"",
            "{\"a\":\"\\",
            "{\"a\":{\"b\":[}",
            "[,]",
        ] {
            assert!(
                members(text).is_err() && elements(text).is_err(),
                "{text:?} should not walk"
            );
        }
        assert!(string_text("\"bad \\q escape\"").is_err());
        assert_eq!(string_text(r#""t\u006fols""#).unwrap(), "tools");
    }
}
