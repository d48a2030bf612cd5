//! A single-pass walk over JSON text by byte offsets: the members of an object and the elements
//! of an array as spans of the text, without building values. For large messages the gateway
//! must look into but not rewrite (a filtered `tools/list`: only each entry's name is read),
//! one scan replaces the several `serde_json` passes that reading nested raw values takes.
//!
//! The walk checks structure (brackets, colons, commas, string ends) and fails on anything it
//! does not expect; it does not check what `serde_json` checks inside scalars (number syntax,
//! escapes), so it is meant for text that `serde_json` has already read once (the response
//! hooks parse every message before any stage sees it). It never panics, whatever the input.

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

/// The end (after the closing quote) of the string opening at `i`. Most strings in MCP messages
/// are short (keys, names, types): a byte loop; past 32 bytes, a vectorised search.
fn skip_string(b: &[u8], i: usize) -> Result<usize> {
    let mut j = i + 1;
    let short = (i + 33).min(b.len());
    while j < short {
        match b[j] {
            b'"' => return Ok(j + 1),
            // An escape: the next byte is escaped whatever it is.
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
    loop {
        let rest = b.get(j..).ok_or(ScanError("an unterminated string"))?;
        match memchr::memchr2(b'"', b'\\', rest) {
            None => return Err(ScanError("an unterminated string")),
            Some(k) if rest[k] == b'"' => return Ok(j + k + 1),
            Some(k) => j += k + 2,
        }
    }
}

/// The end of the value starting at `i` (no leading whitespace).
fn skip_value(b: &[u8], i: usize) -> Result<usize> {
    match b.get(i) {
        None => Err(ScanError("a value is missing")),
        Some(b'"') => skip_string(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while let Some(&c) = b.get(j) {
                match c {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(ScanError("an unterminated object or array"))
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
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Cursor<'a> {
        let mut c = Cursor { text, i: 0 };
        c.ws();
        c
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
        let start = self.i;
        let end = skip_value(self.bytes(), start)?;
        self.i = end;
        Ok(&self.text[start..end])
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
            let key_end = skip_string(self.bytes(), self.i)?;
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
        self.i = skip_ws(self.bytes(), self.i + 1);
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(false);
        }
        Ok(true)
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
                self.i += 1;
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
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => inner == name.as_bytes(),
        _ => string_text(key).is_ok_and(|k| k == name),
    }
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
