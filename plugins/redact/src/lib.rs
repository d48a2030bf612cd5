//! Redacts secrets and personal data in tool arguments (before the upstream sees them) and in
//! tool results (before the client sees them). See README.md for the configuration.

use mcpgate_plugin_sdk::{
    Action, Plugin, Registration, Request, Response, ResponseAction, Value, export_plugin, log,
};
use std::cell::OnceCell;

use regex_lite::Regex;
use serde::Deserialize;
use wildmatch::WildMatch;

/// What a text must contain before a detector's regex is worth running: most text holds no
/// secret, and these checks are far cheaper than a regex scan.
#[derive(Clone, Copy)]
enum Hint {
    /// One of these substrings.
    Any(&'static [&'static str]),
    /// This word, in any case.
    Caseless(&'static str),
    /// At least this many ASCII digits.
    Digits(usize),
    /// No cheap test: always run the regex (custom detectors).
    Always,
}

impl Hint {
    fn may_match(self, text: &str) -> bool {
        match self {
            Hint::Any(needles) => needles.iter().any(|n| text.contains(n)),
            Hint::Caseless(word) => text
                .as_bytes()
                .windows(word.len())
                .any(|w| w.eq_ignore_ascii_case(word.as_bytes())),
            Hint::Digits(n) => text.bytes().filter(u8::is_ascii_digit).count() >= n,
            Hint::Always => true,
        }
    }
}

/// The built-in detectors: (name, hint, pattern). `credit_card` matches are kept only when they
/// pass the Luhn check.
const BUILT_IN: [(&str, Hint, &str); 9] = [
    (
        "email",
        Hint::Any(&["@"]),
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    ),
    (
        "aws_access_key",
        Hint::Any(&["AKIA", "ASIA"]),
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    ),
    (
        "github_token",
        Hint::Any(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]),
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255})\b",
    ),
    (
        "slack_token",
        Hint::Any(&["xox"]),
        r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    ),
    (
        "jwt",
        Hint::Any(&["eyJ"]),
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
    ),
    (
        "bearer",
        Hint::Caseless("bearer"),
        r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*",
    ),
    (
        "private_key",
        Hint::Any(&["PRIVATE KEY-----"]),
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    ),
    ("credit_card", Hint::Digits(13), r"\b\d(?:[ -]?\d){12,18}\b"),
    ("us_ssn", Hint::Digits(9), r"\b\d{3}-\d{2}-\d{4}\b"),
];

/// A detector whose regex is compiled on first use: a plugin instance usually lives for one
/// call, and most calls carry nothing any detector's hint lets through.
struct Detector {
    name: String,
    hint: Hint,
    pattern: String,
    regex: OnceCell<Regex>,
}

impl Detector {
    fn regex(&self) -> &Regex {
        self.regex.get_or_init(|| {
            Regex::new(&self.pattern).expect("patterns are checked when the plugin is built")
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomDetector {
    name: String,
    pattern: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Built-in detectors to use (default: all).
    detectors: Option<Vec<String>>,
    /// Extra detectors: a name and a regular expression.
    custom: Vec<CustomDetector>,
    /// What a match becomes; `{name}` is replaced by the detector's name.
    replacement: String,
    /// Redact tool-call arguments before they reach the upstream.
    arguments: bool,
    /// Redact tool results before they reach the client.
    results: bool,
    /// Tools to redact (`*` wildcards).
    tools: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            detectors: None,
            custom: Vec::new(),
            replacement: "[REDACTED:{name}]".into(),
            arguments: true,
            results: true,
            tools: vec!["*".into()],
        }
    }
}

pub struct Redact {
    detectors: Vec<Detector>,
    replacement: String,
    arguments: bool,
    results: bool,
    tools: Vec<WildMatch>,
}

impl Redact {
    pub fn new(config: Config) -> Result<Self, String> {
        let wanted = config
            .detectors
            .unwrap_or_else(|| BUILT_IN.iter().map(|(n, _, _)| n.to_string()).collect());
        let mut detectors = Vec::new();
        for name in wanted {
            let Some((_, hint, pattern)) = BUILT_IN.iter().find(|(n, _, _)| *n == name) else {
                let known: Vec<&str> = BUILT_IN.iter().map(|(n, _, _)| *n).collect();
                return Err(format!(
                    "unknown detector `{name}` (built-in: {})",
                    known.join(", ")
                ));
            };
            detectors.push(Detector {
                name,
                hint: *hint,
                pattern: pattern.to_string(),
                regex: OnceCell::new(),
            });
        }
        for c in config.custom {
            // A custom pattern is checked (and compiled) now, so a typo fails `mcpgate validate`.
            let re =
                Regex::new(&c.pattern).map_err(|e| format!("custom detector `{}`: {e}", c.name))?;
            detectors.push(Detector {
                name: c.name,
                hint: Hint::Always,
                pattern: c.pattern,
                regex: OnceCell::from(re),
            });
        }
        if detectors.is_empty() {
            return Err("no detectors configured".into());
        }
        if !config.arguments && !config.results {
            return Err("`arguments` and `results` are both false: nothing to do".into());
        }
        Ok(Redact {
            detectors,
            replacement: config.replacement,
            arguments: config.arguments,
            results: config.results,
            tools: config.tools.iter().map(|t| WildMatch::new(t)).collect(),
        })
    }

    fn applies(&self, req: &Request) -> bool {
        req.tool()
            .is_some_and(|t| self.tools.iter().any(|w| w.matches(t)))
    }

    /// Redacts one string; returns how many matches it replaced.
    pub fn redact_str(&self, text: &mut String) -> usize {
        let mut count = 0;
        for d in &self.detectors {
            if !d.hint.may_match(text) {
                continue;
            }
            let (name, re) = (&d.name, d.regex());
            if !re.is_match(text) {
                continue;
            }
            let replacement = self.replacement.replace("{name}", name);
            let out = re.replace_all(text, |caps: &regex_lite::Captures<'_>| {
                let m = &caps[0];
                if name == "credit_card" && !luhn(m) {
                    return m.to_string();
                }
                count += 1;
                replacement.clone()
            });
            if let std::borrow::Cow::Owned(o) = out {
                *text = o;
            }
        }
        count
    }

    /// Redacts every string in a JSON value (object keys stay); returns the number of matches.
    pub fn redact_value(&self, value: &mut Value) -> usize {
        match value {
            Value::String(s) => self.redact_str(s),
            Value::Array(items) => items.iter_mut().map(|v| self.redact_value(v)).sum(),
            Value::Object(map) => map.values_mut().map(|v| self.redact_value(v)).sum(),
            _ => 0,
        }
    }
}

/// The Luhn checksum of the digits in `text`.
fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 13 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

impl Plugin for Redact {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        Redact::new(config)
    }

    fn registration(&self) -> Registration {
        let mut r = Registration::new();
        if self.arguments {
            r = r.requests(["tools/call"]);
        }
        if self.results {
            r = r.responses(["tools/call"]);
        }
        r
    }

    fn on_request(&self, req: &Request) -> Action {
        if !self.arguments || !self.applies(req) {
            return Action::Continue;
        }
        let Some(mut args) = req.arguments().cloned() else {
            return Action::Continue;
        };
        match self.redact_value(&mut args) {
            0 => Action::Continue,
            n => {
                log::info(format!(
                    "redacted {n} value(s) in the arguments of `{}`",
                    req.tool().unwrap_or_default()
                ));
                Action::rewrite_arguments(args)
            }
        }
    }

    fn on_response(&self, resp: &Response) -> ResponseAction {
        if !self.results || !self.applies(resp.request()) {
            return ResponseAction::Continue;
        }
        let Some(mut result) = resp.result().cloned() else {
            return ResponseAction::Continue;
        };
        match self.redact_value(&mut result) {
            0 => ResponseAction::Continue,
            n => {
                log::info(format!(
                    "redacted {n} value(s) in the result of `{}`",
                    resp.request().tool().unwrap_or_default()
                ));
                ResponseAction::ReplaceResult(result)
            }
        }
    }
}

export_plugin!(Redact);

#[cfg(test)]
mod tests {
    use super::*;
    use mcpgate_plugin_sdk::json;
    use mcpgate_plugin_sdk::testing::{self, request};

    fn plugin(config: Value) -> Redact {
        Redact::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    #[test]
    fn redacts_each_detector() {
        let r = plugin(json!({}));
        let cases = [
            (
                "mail bob.smith+x@example.co.uk now",
                "mail [REDACTED:email] now",
            ),
            (
                "key AKIAIOSFODNN7EXAMPLE end",
                "key [REDACTED:aws_access_key] end",
            ),
            (
                "t=ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "t=[REDACTED:github_token]",
            ),
            (
                "Authorization: Bearer abc.def-ghi_jkl~mnop",
                "Authorization: [REDACTED:bearer]",
            ),
            (
                "card 4111 1111 1111 1111 ok",
                "card [REDACTED:credit_card] ok",
            ),
            ("ssn 123-45-6789", "ssn [REDACTED:us_ssn]"),
            ("xoxb-1234567890-abcdef", "[REDACTED:slack_token]"),
        ];
        for (input, want) in cases {
            let mut s = input.to_string();
            assert!(r.redact_str(&mut s) >= 1, "{input}");
            assert_eq!(s, want);
        }
        // Digits that fail the Luhn check are not a card number.
        let mut s = "order 4111 1111 1111 1112".to_string();
        assert_eq!(r.redact_str(&mut s), 0);
        assert_eq!(s, "order 4111 1111 1111 1112");
    }

    #[test]
    fn every_built_in_pattern_compiles_and_hints_admit_its_matches() {
        for (name, hint, pattern) in BUILT_IN {
            Regex::new(pattern).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!hint.may_match("plain words, 12 digits"), "{name}");
        }
        assert!(Hint::Caseless("bearer").may_match("auth: BeArEr x"));
    }

    #[test]
    fn walks_json_and_keeps_keys() {
        let r = plugin(
            json!({"detectors": ["email"], "custom": [{"name": "emp", "pattern": "EMP-[0-9]{6}"}], "replacement": "<{name}>"}),
        );
        let mut v = json!({"to": ["a@b.io", "plain"], "note": {"who": "EMP-123456"}, "n": 3, "a@b.io": true});
        assert_eq!(r.redact_value(&mut v), 2);
        assert_eq!(
            v,
            json!({"to": ["<email>", "plain"], "note": {"who": "<emp>"}, "n": 3, "a@b.io": true})
        );
    }

    #[test]
    fn config_errors_are_clear() {
        let bad = |c: Value| {
            Redact::new(serde_json::from_value(c).unwrap())
                .err()
                .unwrap()
        };
        assert!(bad(json!({"detectors": ["phone"]})).contains("unknown detector `phone`"));
        assert!(
            bad(json!({"custom": [{"name": "x", "pattern": "("}]})).contains("custom detector `x`")
        );
        assert!(bad(json!({"arguments": false, "results": false})).contains("nothing to do"));
    }

    // The hooks themselves, natively, on the views the gateway hands over.
    #[test]
    fn hooks_redact_arguments_going_out_and_results_coming_back() {
        let r: Redact = testing::init(json!({"tools": ["send_*"]})).unwrap();
        let call = request("tools/call")
            .tool("send_mail")
            .arguments(json!({"to": "bob@example.com", "n": 1}))
            .build();
        assert_eq!(
            r.on_request(&call),
            Action::rewrite_arguments(json!({"to": "[REDACTED:email]", "n": 1}))
        );
        let answer = testing::response(
            &call,
            json!({"content": [{"type": "text", "text": "sent to bob@example.com"}]}),
        );
        assert_eq!(
            r.on_response(&answer),
            ResponseAction::ReplaceResult(
                json!({"content": [{"type": "text", "text": "sent to [REDACTED:email]"}]})
            )
        );
        // Errors and other tools pass untouched.
        let failed = testing::error_response(&call, -32000, "no route to bob@example.com");
        assert_eq!(r.on_response(&failed), ResponseAction::Continue);
        let other = request("tools/call")
            .tool("echo")
            .arguments(json!({"text": "bob@example.com"}))
            .build();
        assert_eq!(r.on_request(&other), Action::Continue);
        assert_eq!(
            testing::logs(),
            vec![
                (
                    testing::Level::Info,
                    "redacted 1 value(s) in the arguments of `send_mail`".to_string()
                ),
                (
                    testing::Level::Info,
                    "redacted 1 value(s) in the result of `send_mail`".to_string()
                ),
            ]
        );
    }
}
