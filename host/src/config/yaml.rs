//! YAML with positions: parse, interpolate `${VAR}`, deserialize while collecting every error.
//!
//! serde stops at the first error; users want all of them at once, each with its key path and
//! line. So the typed structs keep every field optional, and [`deserialize_all`] deserializes,
//! records the error, removes the offending node from the tree and tries again. Required keys and
//! cross-field rules are checked afterwards by the validator, which asks [`line_of`] for lines.

use std::collections::BTreeSet;
use std::fmt;

use marked_yaml::{LoaderOptions, Node};
use serde::de::DeserializeOwned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`upstreams.github.timeout`), empty for the whole file.
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.path.is_empty()) {
            (Some(line), false) => write!(f, "line {line}: {}: {}", self.path, self.message),
            (Some(line), true) => write!(f, "line {line}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Every error found in one config file, in file order.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors {
    pub source: String,
    pub errors: Vec<ConfigError>,
    /// Environment variables the file uses (`${VAR}`, `*_env` keys) that are not set: named once
    /// more at the end with how to set them, since that is the usual first-run error.
    pub missing_env: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{}: {n} error{}",
            self.source,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            let at = e.line.map(|l| format!(":{l}")).unwrap_or_default();
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!(" {}:", e.path)
            };
            writeln!(f, "  {}{at}:{key} {}", self.source, e.message)?;
        }
        if !self.missing_env.is_empty() {
            let n = self.missing_env.len();
            let assignments: Vec<String> = self
                .missing_env
                .iter()
                .map(|v| format!("{v}=..."))
                .collect();
            writeln!(
                f,
                "hint: {n} environment variable{} not set; set {} before running mcpgate, e.g.\n  export {}",
                if n == 1 { " is" } else { "s are" },
                if n == 1 { "it" } else { "them" },
                assignments.join(" ")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors; remembers which paths already have one so that a later "missing" check does
/// not report a key a second time after its bad value was removed.
#[derive(Debug, Default)]
pub struct Sink {
    pub errors: Vec<ConfigError>,
    reported: BTreeSet<String>,
    /// Environment variables the file needs that are not set (for one hint at the end).
    pub missing_env: BTreeSet<String>,
}

impl Sink {
    pub fn push(
        &mut self,
        path: impl Into<String>,
        line: Option<usize>,
        message: impl Into<String>,
    ) {
        let path = path.into();
        self.reported.insert(path.clone());
        self.errors.push(ConfigError {
            path,
            line,
            message: message.into(),
        });
    }

    /// Whether `path` (or a key below it) already has an error.
    pub fn has_error_at(&self, path: &str) -> bool {
        self.reported
            .iter()
            .any(|p| p == path || p.starts_with(&format!("{path}.")))
    }

    pub fn finish(mut self, source: &str) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|e| e.line.unwrap_or(0));
        Err(ConfigErrors {
            source: source.to_string(),
            errors: self.errors,
            missing_env: self.missing_env.into_iter().collect(),
        })
    }
}

/// The number of the text's last line as YAML counts lines (CR LF, a lone CR and LF each end
/// one): no error may name a line past it.
pub fn last_line(text: &str) -> usize {
    text.replace("\r\n", "\n").matches(['\r', '\n']).count() + 1
}

/// Parses YAML text into a positioned tree. An empty file is an empty mapping.
pub fn parse(text: &str) -> Result<Node, ConfigError> {
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Node::from(
            marked_yaml::types::MarkedMappingNode::new_empty(marked_yaml::Span::new_blank()),
        ));
    }
    marked_yaml::parse_yaml_with_options(
        0,
        text,
        LoaderOptions::default().error_on_duplicate_keys(true),
    )
    .map_err(|e| {
        // The scanner places an error found at the end of the text on the line after it:
        // name the text's last line instead (found by fuzzing: `!` was "line 2" of one line).
        let last = last_line(text);
        let reported = load_error_line(&e);
        let at_end = reported.is_some_and(|l| l > last);
        ConfigError {
            path: String::new(),
            line: reported.map(|l| l.min(last)),
            message: if at_end {
                format!("not valid YAML: {e} (at the end of the text)")
            } else {
                format!("not valid YAML: {e}")
            },
        }
    })
}

fn load_error_line(e: &marked_yaml::LoadError) -> Option<usize> {
    use marked_yaml::LoadError::*;
    match e {
        TopLevelMustBeMapping(m)
        | TopLevelMustBeSequence(m)
        | UnexpectedAnchor(m)
        | MappingKeyMustBeScalar(m)
        | UnexpectedTag(m)
        | ScanError(m, _) => Some(m.line()),
        DuplicateKey(inner) => inner.key.span().start().map(|m| m.line()),
    }
    .filter(|line| *line > 0)
}

/// Splits a rendered path (`a.b[2].c`) into segments.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        // A key may itself hold brackets (`{][`): only a `[digits]` is an index, and a `]`
        // before any `[` is text, never a slice to cut (the config fuzz target found that).
        while let Some(end) = rest.find(']') {
            if let Some(Ok(i)) = rest.get(1..end).map(str::parse) {
                out.push(Segment::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The node at a dotted path, if it exists.
pub fn node_at<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    let mut node = root;
    for seg in segments(path) {
        node = match seg {
            Segment::Key(k) => node.as_mapping()?.get_node(k)?,
            Segment::Index(i) => node.as_sequence()?.get(i)?,
        };
    }
    Some(node)
}

/// A YAML subtree as JSON, resolving plain scalars as YAML 1.2's core schema does (null, bools,
/// integers, floats; everything else a string). Quoted scalars stay strings.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !s.may_coerce() {
                return Value::String(text.to_string());
            }
            if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
                return Value::Null;
            }
            if let Some(b) = s.as_bool() {
                return Value::Bool(b);
            }
            if let Ok(i) = text.parse::<i64>() {
                return i.into();
            }
            if let Ok(u) = text.parse::<u64>() {
                return u.into();
            }
            let numeric = text
                .trim_start_matches(['-', '+'])
                .starts_with(|c: char| c.is_ascii_digit() || c == '.');
            match text
                .parse::<f64>()
                .ok()
                .filter(|f| numeric && f.is_finite())
            {
                Some(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
                None => Value::String(text.to_string()),
            }
        }
        Node::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
                .collect(),
        ),
    }
}

/// The line of the key at `path` (or of its value when it has no key), 1-based.
pub fn line_of(root: &Node, path: &str) -> Option<usize> {
    if let Some((parent, key)) = path.rsplit_once('.').or(Some(("", path)))
        && !key.contains('[')
    {
        let parent_node = if parent.is_empty() {
            Some(root)
        } else {
            node_at(root, parent)
        };
        if let Some(map) = parent_node.and_then(Node::as_mapping) {
            for (k, _) in map.iter() {
                if k.as_str() == key {
                    return k.span().start().map(|m| m.line());
                }
            }
        }
    }
    node_at(root, path).and_then(|n| n.span().start().map(|m| m.line()))
}

/// Removes the node at `path`; false if there was nothing to remove.
fn remove_at(root: &mut Node, path: &str) -> bool {
    let segs = segments(path);
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut node = root;
    for seg in parents {
        let next = match seg {
            Segment::Key(k) => node.as_mapping_mut().and_then(|m| {
                m.iter_mut()
                    .find(|(key, _)| key.as_str() == *k)
                    .map(|(_, v)| v)
            }),
            Segment::Index(i) => node.as_sequence_mut().and_then(|s| s.get_mut(*i)),
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match last {
        Segment::Key(k) => node
            .as_mapping_mut()
            .and_then(|m| {
                let key = m.keys().find(|key| key.as_str() == *k).cloned()?;
                m.remove(&key)
            })
            .is_some(),
        Segment::Index(i) => match node.as_sequence_mut() {
            Some(s) if *i < s.len() => {
                s.remove(*i);
                true
            }
            _ => false,
        },
    }
}

/// Replaces `${VAR}` (and `${VAR:-default}`) in every scalar value; `$${` stays a literal `${`.
/// A missing variable is an error at its key, and its value is removed so no second error follows.
///
/// Returns the paths of the values that came wholly from the environment (see
/// [`Substituted::from_env`]): a secret there is not written in the file, which the validator
/// needs to know (`auth.keys[].key: ${VAR}` is accepted, a literal key is not).
pub fn interpolate(
    root: &mut Node,
    env: &dyn Fn(&str) -> Option<String>,
    sink: &mut Sink,
) -> BTreeSet<String> {
    let mut missing = Vec::new();
    let mut from_env = BTreeSet::new();
    walk_scalars(root, String::new(), &mut |path, scalar| {
        let text = scalar.as_str();
        if !text.contains("${") {
            return;
        }
        match substitute(text, env) {
            Ok(done) => {
                if done.from_env {
                    from_env.insert(path.to_string());
                }
                let span = *scalar.span();
                *scalar = marked_yaml::types::MarkedScalarNode::new(span, done.value);
            }
            Err(vars) => missing.push((
                path.to_string(),
                vars,
                scalar.span().start().map(|m| m.line()),
            )),
        }
    });
    for (path, vars, line) in missing {
        let message = match vars.as_slice() {
            [var] => format!("environment variable `{var}` is not set (used as `${{{var}}}`)"),
            _ => format!(
                "environment variables {} are not set",
                vars.iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        sink.push(&path, line, message);
        sink.missing_env.extend(vars);
        remove_at(root, &path);
    }
    from_env
}

fn walk_scalars(
    node: &mut Node,
    path: String,
    f: &mut dyn FnMut(&str, &mut marked_yaml::types::MarkedScalarNode),
) {
    match node {
        Node::Scalar(s) => f(&path, s),
        Node::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let p = if path.is_empty() {
                    k.as_str().to_string()
                } else {
                    format!("{path}.{}", k.as_str())
                };
                walk_scalars(v, p, f);
            }
        }
        Node::Sequence(s) => {
            for (i, v) in s.iter_mut().enumerate() {
                walk_scalars(v, format!("{path}[{i}]"), f);
            }
        }
    }
}

/// The result of [`substitute`].
#[derive(Debug, PartialEq, Eq)]
pub struct Substituted {
    pub value: String,
    /// Every character of `value` came from environment variables: the text was only `${VAR}`
    /// references (at least one), none of which fell back to its `:-default`. A secret written
    /// this way is not stored in the file.
    pub from_env: bool,
}

/// `${VAR}` substitution; returns the names of the unset variables as the error.
pub fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, Vec<String>> {
    let mut unset = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Whether anything but a variable's value went into `out`, and whether a variable did.
    let mut literal = false;
    let mut variables = false;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        literal |= i > 0;
        let after = &rest[i..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            literal = true;
            rest = escaped;
        } else if let Some(body) = after.strip_prefix("${")
            && let Some(end) = body.find('}')
        {
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (env(name), default) {
                (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                (_, Some(d)) => {
                    out.push_str(d);
                    literal = true;
                }
                (None, None) if !unset.iter().any(|u| u == name) => unset.push(name.to_string()),
                (None, None) => {}
                (Some(_), None) => unreachable!("handled by the first arm"),
            }
            variables = true;
            rest = &body[end + 1..];
        } else {
            out.push('$');
            literal = true;
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    literal |= !rest.is_empty();
    if !unset.is_empty() {
        return Err(unset);
    }
    Ok(Substituted {
        value: out,
        from_env: variables && !literal,
    })
}

/// Deserializes `T` from the tree, recording every error (key path + line) in `sink` and
/// removing each offending node until the rest deserializes. `T`'s fields must all be optional
/// (or defaulted) for this to reach a value; the validator then checks what is required.
pub fn deserialize_all<T: DeserializeOwned + Default>(root: &mut Node, sink: &mut Sink) -> T {
    for _ in 0..200 {
        let err = match marked_yaml::from_node::<T>(root) {
            Ok(v) => return v,
            Err(e) => e,
        };
        let path = err.path().unwrap_or_default().to_string();
        let line = err.start_mark().map(|m| m.line());
        let message = match &*err {
            marked_yaml::Error::UnknownFieldError(field, expected, _) => {
                if expected.is_empty() {
                    format!("unknown key `{field}`")
                } else {
                    format!(
                        "unknown key `{field}` (expected one of: {})",
                        expected.join(", ")
                    )
                }
            }
            marked_yaml::Error::IntegerParseFailure(e, _) => {
                format!("expected a whole number: {e}")
            }
            marked_yaml::Error::FloatParseFailure(e, _) => format!("expected a number: {e}"),
            marked_yaml::Error::NotBoolean(_) => "expected true or false".to_string(),
            marked_yaml::Error::Other(m, _) => m.clone(),
        };
        let line = line.or_else(|| line_of(root, &path));
        sink.push(&path, line, message);
        if path.is_empty() || !remove_at(root, &path) {
            break;
        }
    }
    T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/x".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitution_table() {
        /// The value, or the unset variables.
        type Want<'a> = Result<&'a str, &'a [&'a str]>;
        // (input, want, whether the value came wholly from the environment)
        let cases: &[(&str, Want, bool)] = &[
            ("plain", Ok("plain"), false),
            ("${HOME_DIR}", Ok("/home/x"), true),
            ("${HOME_DIR}${HOME_DIR}", Ok("/home/x/home/x"), true),
            ("${HOME_DIR}/a", Ok("/home/x/a"), false),
            (" ${HOME_DIR}", Ok(" /home/x"), false),
            ("a${HOME_DIR}b${HOME_DIR}", Ok("a/home/xb/home/x"), false),
            ("$${HOME_DIR}", Ok("${HOME_DIR}"), false),
            ("${NOPE:-fallback}", Ok("fallback"), false),
            ("${HOME_DIR:-fallback}", Ok("/home/x"), true),
            ("${EMPTY:-fallback}", Ok("fallback"), false),
            ("${EMPTY}", Ok(""), true),
            ("${NOPE}", Err(&["NOPE"][..]), false),
            (
                "${NOPE}${HOME_DIR}${ALSO}",
                Err(&["NOPE", "ALSO"][..]),
                false,
            ),
            ("cost $5", Ok("cost $5"), false),
            ("${HOME_DIR}$", Ok("/home/x$"), false),
            ("${unterminated", Ok("${unterminated"), false),
        ];
        for (input, want, from_env) in cases {
            let got = substitute(input, &env);
            match want {
                Ok(w) => assert_eq!(
                    got,
                    Ok(Substituted {
                        value: w.to_string(),
                        from_env: *from_env
                    }),
                    "{input}"
                ),
                Err(v) => assert_eq!(
                    got,
                    Err(v.iter().map(|v| v.to_string()).collect()),
                    "{input}"
                ),
            }
        }
    }

    #[test]
    fn interpolation_remembers_values_from_the_environment_and_the_unset_variables() {
        let mut root = parse("a: ${HOME_DIR}\nb: x${HOME_DIR}\nc:\n  - ${HOME_DIR}\n  - plain\nd: ${NOPE}\ne: ${NOPE}${ALSO_NOPE}\n").unwrap();
        let mut sink = Sink::default();
        let from_env = interpolate(&mut root, &env, &mut sink);
        assert_eq!(
            from_env.into_iter().collect::<Vec<_>>(),
            ["a", "c[0]"],
            "only values made of variables alone"
        );
        assert_eq!(
            sink.missing_env
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["ALSO_NOPE", "NOPE"],
            "each unset variable once"
        );
        let errors = sink.finish("f.yaml").unwrap_err();
        let text = errors.to_string();
        assert_eq!(errors.errors.len(), 2, "{text}");
        assert!(
            text.contains("f.yaml:7: e: environment variables `NOPE`, `ALSO_NOPE` are not set"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "hint: 2 environment variables are not set; set them before running mcpgate, e.g.\n  export ALSO_NOPE=... NOPE=...\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn lines_and_paths() {
        let root = parse("a:\n  b: 1\n  list:\n    - x: 2\n    - y: 3\n").unwrap();
        assert_eq!(line_of(&root, "a"), Some(1));
        assert_eq!(line_of(&root, "a.b"), Some(2));
        assert_eq!(line_of(&root, "a.list[1].y"), Some(5));
        assert_eq!(line_of(&root, "a.list[1]"), Some(5));
        assert_eq!(line_of(&root, "nope"), None);
    }
}
