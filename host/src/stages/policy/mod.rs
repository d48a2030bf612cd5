//! Access policies: first-match-wins rules over clients, servers, methods and tool, prompt and
//! resource names, with glob patterns (`*`, `search_*`, `{read,list}_*`).
//!
//! What is judged:
//! - calls on a named thing (`tools/call`, `prompts/get`, `resources/read`): the first rule that
//!   matches decides, else `default`;
//! - any other method (initialize, lists, ping, notifications, discover): only rules that name the
//!   method in `methods:` apply; otherwise it is allowed, so `default: deny` locks down tools,
//!   prompts and resources without breaking the protocol's plumbing.
//!
//! Lists are filtered for the caller: an item is listed only if calling it would be allowed, in
//! JSON and SSE responses alike (only the list's own response message is parsed), and a modern
//! `cacheScope: "public"` on a filtered list becomes `"private"`.
//!
//! A denied call is answered with HTTP 200 and a JSON-RPC error (-32007) whose message carries
//! the reason: the SDK clients raise exactly that message to their caller (an HTTP 4xx would be
//! reported as a transport failure, without the reason).

pub mod config;

use http::StatusCode;
use serde_json::Value;

use crate::error::{GatewayError, StageKind};
use crate::mcp::{Message, jsonrpc};
use crate::pipeline::{BoxFuture, RequestContext, ResponseVerdict, Stage, Verdict};

/// A compiled name pattern (the config's one glob dialect, see [`crate::glob`]).
pub use crate::glob::Glob as Pattern;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// One rule; an absent field matches anything.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in the config (1-based), or the rule's `name`, for reasons and audit records.
    pub label: String,
    pub clients: Option<Vec<Pattern>>,
    pub servers: Option<Vec<Pattern>>,
    pub methods: Option<Vec<Pattern>>,
    pub tools: Option<Vec<Pattern>>,
    pub prompts: Option<Vec<Pattern>>,
    pub resources: Option<Vec<Pattern>>,
    pub effect: Effect,
    pub reason: Option<String>,
}

fn any(patterns: &Option<Vec<Pattern>>, name: &str) -> bool {
    patterns
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| p.matches(name)))
}

/// What a rule is asked about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub client: &'a str,
    pub server: &'a str,
    pub method: &'a str,
    pub target: Option<&'a str>,
}

impl Rule {
    fn matches(&self, s: &Subject<'_>) -> bool {
        if !(any(&self.clients, s.client)
            && any(&self.servers, s.server)
            && any(&self.methods, s.method))
        {
            return false;
        }
        // Name fields only match calls on that kind of thing.
        let by_kind = |kind: &Option<Vec<Pattern>>, methods: &[&str]| {
            kind.is_none() || (methods.contains(&s.method) && any(kind, s.target.unwrap_or("")))
        };
        by_kind(&self.tools, &["tools/call"])
            && by_kind(&self.prompts, &["prompts/get"])
            && by_kind(&self.resources, &["resources/read", "resources/subscribe"])
    }
}

/// The compiled `policy:` section.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub default: Effect,
    pub rules: Vec<Rule>,
}

/// A decision and the rule that made it (`None` = the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub effect: Effect,
    pub rule: Option<String>,
    pub reason: Option<String>,
}

/// Calls on a named thing: judged by the rules and `default`. Subscribing to a resource's
/// updates is judged like reading it.
fn is_call(method: &str) -> bool {
    matches!(
        method,
        "tools/call" | "prompts/get" | "resources/read" | "resources/subscribe"
    )
}

impl PolicyConfig {
    /// First match wins; calls fall back to `default`, other methods to allow.
    pub fn judge(&self, s: &Subject<'_>) -> Judgement {
        for rule in &self.rules {
            let names_method = rule.methods.is_some();
            if (is_call(s.method) || names_method) && rule.matches(s) {
                return Judgement {
                    effect: rule.effect,
                    rule: Some(rule.label.clone()),
                    reason: rule.reason.clone(),
                };
            }
        }
        let effect = if is_call(s.method) {
            self.default
        } else {
            Effect::Allow
        };
        Judgement {
            effect,
            rule: None,
            reason: None,
        }
    }

    /// Whether a resource URI can change a decision: a rule names resources, or calls are
    /// denied by default. Only then are URIs normalised (and refused when they cannot be).
    pub fn judges_resources(&self) -> bool {
        self.default == Effect::Deny || self.rules.iter().any(|r| r.resources.is_some())
    }

    /// Whether lists of this kind can differ per caller (so they must be filtered).
    fn filters(&self, list_method: &str) -> bool {
        let names = |r: &Rule| match list_method {
            "tools/list" => r.tools.is_some(),
            "prompts/list" => r.prompts.is_some(),
            "resources/list" => r.resources.is_some(),
            _ => false,
        };
        matches!(
            list_method,
            "tools/list" | "prompts/list" | "resources/list"
        ) && (self.default == Effect::Deny || self.rules.iter().any(names))
    }
}

/// The policy stage.
pub struct Policy {
    config: PolicyConfig,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Self {
        Policy { config }
    }
}

/// The methods whose target is a resource URI.
fn is_resource_method(method: &str) -> bool {
    matches!(
        method,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe"
    )
}

/// A policy refusal: HTTP 200 with JSON-RPC error -32007, whose message SDK clients show.
fn denied(message: String, rule: Option<String>, reason: Option<String>) -> GatewayError {
    GatewayError::Rejected {
        stage: StageKind::Policy,
        status: StatusCode::OK,
        code: jsonrpc::POLICY_DENIED,
        message,
        data: Some(serde_json::json!({"rule": rule, "reason": reason})),
        headers: vec![],
    }
}

impl Stage for Policy {
    fn name(&self) -> &str {
        "policy"
    }

    fn kind(&self) -> StageKind {
        StageKind::Policy
    }

    fn on_request<'a>(&'a self, cx: &'a mut RequestContext) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let Some(msg) = cx.message() else {
                return Verdict::Continue;
            };
            if msg.method.is_none() {
                return Verdict::Continue;
            }
            let client = cx.client_key();
            // Resource URIs are judged in their normal form; one that has none is refused
            // whenever a rule could judge it.
            let normalised = match (is_resource_method(msg.method()), msg.target.as_deref()) {
                (true, Some(uri)) if self.config.judges_resources() => {
                    match crate::mcp::uri::normalize(uri) {
                        Ok(n) => Some(n),
                        Err(why) => {
                            return Verdict::Reject(denied(
                                format!("resource `{uri}` is refused: {why}"),
                                None,
                                None,
                            ));
                        }
                    }
                }
                _ => None,
            };
            let subject = Subject {
                client: &client,
                server: &cx.upstream.name,
                method: msg.method(),
                target: normalised.as_deref().or(msg.target.as_deref()),
            };
            let j = self.config.judge(&subject);
            if j.effect == Effect::Allow {
                return Verdict::Continue;
            }
            let what = match (msg.method(), msg.target.as_deref()) {
                ("tools/call", Some(t)) => format!("tool `{t}`"),
                ("prompts/get", Some(t)) => format!("prompt `{t}`"),
                ("resources/read" | "resources/subscribe", Some(t)) => format!("resource `{t}`"),
                (m, _) => format!("method `{m}`"),
            };
            let by = j
                .rule
                .as_deref()
                .map_or("the default policy".to_string(), |r| {
                    format!("policy rule {r}")
                });
            let message = match &j.reason {
                Some(reason) => format!("{what} is denied by {by}: {reason}"),
                None => format!("{what} is denied by {by}"),
            };
            Verdict::Reject(denied(message, j.rule, j.reason))
        })
    }

    fn wants_response(&self, _cx: &RequestContext, request: &Message) -> bool {
        self.config.filters(request.method())
    }

    fn hooks_responses(&self) -> bool {
        ["tools/list", "prompts/list", "resources/list"]
            .iter()
            .any(|m| self.config.filters(m))
    }

    fn on_response<'a>(
        &'a self,
        cx: &'a RequestContext,
        request: &'a Message,
        response: &'a mut Value,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            let (field, call, key) = match request.method() {
                "tools/list" => ("tools", "tools/call", "name"),
                "prompts/list" => ("prompts", "prompts/get", "name"),
                "resources/list" => ("resources", "resources/read", "uri"),
                _ => return ResponseVerdict::Unchanged,
            };
            let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) else {
                return ResponseVerdict::Unchanged;
            };
            let client = cx.client_key();
            if let Some(items) = result.get_mut(field).and_then(Value::as_array_mut) {
                let normalise = field == "resources" && self.config.judges_resources();
                items.retain(|item| {
                    let name = item.get(key).and_then(Value::as_str).unwrap_or("");
                    let normalised = if normalise {
                        match crate::mcp::uri::normalize(name) {
                            Ok(n) => Some(n),
                            // What could not be read is not listed either.
                            Err(_) => return false,
                        }
                    } else {
                        None
                    };
                    let s = Subject {
                        client: &client,
                        server: &cx.upstream.name,
                        method: call,
                        target: Some(normalised.as_deref().unwrap_or(name)),
                    };
                    self.config.judge(&s).effect == Effect::Allow
                });
            }
            // A list filtered per caller must not be cached for everyone.
            if result.get("cacheScope").and_then(Value::as_str) == Some("public") {
                result.insert("cacheScope".into(), "private".into());
            }
            ResponseVerdict::Modified
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Option<Vec<Pattern>> {
        Some(list.iter().map(|p| Pattern::new(p).unwrap()).collect())
    }

    fn rule(label: &str, effect: Effect) -> Rule {
        Rule {
            label: label.into(),
            clients: None,
            servers: None,
            methods: None,
            tools: None,
            prompts: None,
            resources: None,
            effect,
            reason: None,
        }
    }

    #[test]
    fn wildcard_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", true),
            ("search_*", "search_code", true),
            ("search_*", "search_", true),
            ("search_*", "research_code", false),
            ("*_issue", "create_issue", true),
            ("get_?", "get_x", true),
            ("get_?", "get_xy", false),
            ("{read,list}_*", "list_files", true),
            ("{read,list}_*", "write_files", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("file:///docs/*", "file:///docs/a/b.md", true),
            ("Search_*", "search_code", false),
            // `?` is one character, however many bytes it takes (found by fuzzing).
            ("get_?", "get_\u{591}", true),
            ("?", "é", true),
            ("??", "é", false),
            ("admin_*", "admin_\nx", true),
            ("[é]", "é", true),
            ("[!a]", "é", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                Pattern::new(pattern).unwrap().matches(name),
                *want,
                "{pattern} ~ {name}"
            );
        }
        assert!(Pattern::new("[unclosed").is_err());
    }

    #[test]
    fn first_match_wins_and_defaults() {
        let mut allow_alice = rule("1", Effect::Allow);
        allow_alice.clients = pats(&["alice"]);
        allow_alice.tools = pats(&["delete_*"]);
        let mut deny_delete = rule("2", Effect::Deny);
        deny_delete.tools = pats(&["delete_*"]);
        deny_delete.reason = Some("destructive".into());
        let mut deny_list_on_secret = rule("3", Effect::Deny);
        deny_list_on_secret.servers = pats(&["secret"]);
        deny_list_on_secret.methods = pats(&["tools/list"]);
        let p = PolicyConfig {
            default: Effect::Allow,
            rules: vec![allow_alice, deny_delete, deny_list_on_secret],
        };
        let s = |client, server, method, target| Subject {
            client,
            server,
            method,
            target,
        };
        let cases: &[(Subject, Effect, Option<&str>)] = &[
            (
                s("alice", "gh", "tools/call", Some("delete_repo")),
                Effect::Allow,
                Some("1"),
            ),
            (
                s("bob", "gh", "tools/call", Some("delete_repo")),
                Effect::Deny,
                Some("2"),
            ),
            (
                s("bob", "gh", "tools/call", Some("search")),
                Effect::Allow,
                None,
            ),
            (
                s("bob", "gh", "prompts/get", Some("delete_repo")),
                Effect::Allow,
                None,
            ),
            (
                s("bob", "secret", "tools/list", None),
                Effect::Deny,
                Some("3"),
            ),
            (s("bob", "gh", "tools/list", None), Effect::Allow, None),
            (s("bob", "gh", "initialize", None), Effect::Allow, None),
        ];
        for (subject, effect, rule) in cases {
            let j = p.judge(subject);
            assert_eq!(
                (j.effect, j.rule.as_deref()),
                (*effect, *rule),
                "{subject:?}"
            );
        }
        assert_eq!(p.judge(&cases[1].0).reason.as_deref(), Some("destructive"));
    }

    #[test]
    fn default_deny_locks_calls_not_plumbing() {
        let mut allow_read = rule("read-only", Effect::Allow);
        allow_read.tools = pats(&["read_*", "list_*"]);
        let p = PolicyConfig {
            default: Effect::Deny,
            rules: vec![allow_read],
        };
        let s = |method, target| Subject {
            client: "c",
            server: "s",
            method,
            target,
        };
        assert_eq!(
            p.judge(&s("tools/call", Some("read_file"))).effect,
            Effect::Allow
        );
        assert_eq!(
            p.judge(&s("tools/call", Some("write_file"))).effect,
            Effect::Deny
        );
        assert_eq!(
            p.judge(&s("resources/read", Some("file:///x"))).effect,
            Effect::Deny
        );
        for plumbing in [
            "initialize",
            "tools/list",
            "notifications/initialized",
            "ping",
            "server/discover",
        ] {
            assert_eq!(
                p.judge(&s(plumbing, None)).effect,
                Effect::Allow,
                "{plumbing}"
            );
        }
        assert!(p.filters("tools/list") && p.filters("prompts/list"));
        let open = PolicyConfig {
            default: Effect::Allow,
            rules: vec![],
        };
        assert!(!open.filters("tools/list"));
    }
}
