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

use crate::error::{GatewayError, StageKind};
use crate::mcp::{Message, jsonrpc, scan};
use crate::pipeline::{BoxFuture, Reply, RequestContext, ResponseVerdict, Stage, Verdict};

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
        self.matches_caller(s) && self.matches_target(s)
    }

    /// The client, server and method parts of [`Rule::matches`].
    fn matches_caller(&self, s: &Subject<'_>) -> bool {
        any(&self.clients, s.client) && any(&self.servers, s.server) && any(&self.methods, s.method)
    }

    /// The name parts of [`Rule::matches`]: name fields only match calls on that kind of thing.
    fn matches_target(&self, s: &Subject<'_>) -> bool {
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
        match self
            .rules
            .iter()
            .find(|rule| (is_call(s.method) || rule.methods.is_some()) && rule.matches(s))
        {
            Some(rule) => Judgement {
                effect: rule.effect,
                rule: Some(rule.label.clone()),
                reason: rule.reason.clone(),
            },
            None if is_call(s.method) => Judgement {
                effect: self.default,
                rule: None,
                reason: None,
            },
            None => Judgement {
                effect: Effect::Allow,
                rule: None,
                reason: None,
            },
        }
    }

    /// [`PolicyConfig::judge`] for many calls of `call` (a call method) by one caller on one
    /// server, told apart by their names alone: the rules whose client, server and method parts
    /// cannot match are left out once, not once per name (a list's entries).
    fn judge_names<'p>(&'p self, client: &str, server: &str, call: &'static str) -> NameJudge<'p> {
        debug_assert!(is_call(call));
        let caller = Subject {
            client,
            server,
            method: call,
            target: None,
        };
        NameJudge {
            rules: self
                .rules
                .iter()
                .filter(|r| r.matches_caller(&caller))
                .collect(),
            default: self.default,
            call,
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

/// Judges calls of one method by one caller on one server by name ([`PolicyConfig::judge_names`]).
struct NameJudge<'p> {
    rules: Vec<&'p Rule>,
    default: Effect,
    call: &'static str,
}

impl NameJudge<'_> {
    fn allows(&self, name: &str) -> bool {
        let s = Subject {
            client: "",
            server: "",
            method: self.call,
            target: Some(name),
        };
        self.rules
            .iter()
            .find(|r| r.matches_target(&s))
            .map_or(self.default, |r| r.effect)
            == Effect::Allow
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
        response: &'a mut Reply<'_>,
    ) -> BoxFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            let (field, call, key) = match request.method() {
                "tools/list" => ("tools", "tools/call", "name"),
                "prompts/list" => ("prompts", "prompts/get", "name"),
                "resources/list" => ("resources", "resources/read", "uri"),
                _ => return ResponseVerdict::Unchanged,
            };
            let client = cx.client_key();
            let judge = self.config.judge_names(&client, &cx.upstream.name, call);
            let normalise = field == "resources" && self.config.judges_resources();
            let allows = |name: &str| {
                if !normalise {
                    return judge.allows(name);
                }
                // What could not be read is not listed either.
                crate::mcp::uri::normalize(name).is_ok_and(|n| judge.allows(&n))
            };
            // The walk also checks the text when the hooks left that to the first reader.
            let (text, strict) = response.text_to_walk();
            match filter_list(text, strict, field, key, allows) {
                Ok(None) => {
                    response.walked();
                    ResponseVerdict::Unchanged
                }
                Ok(Some((text, id_at))) => {
                    response.set_text_with_id(text, id_at);
                    ResponseVerdict::Modified
                }
                Err(_) => ResponseVerdict::Refuse("the list response cannot be read"),
            }
        })
    }
}

/// A filtered list's text, and where its one top-level `id` value is (if it has exactly one).
type Filtered = (String, Option<std::ops::Range<usize>>);

/// Filters a list response given as JSON text, without parsing it into a tree: one walk over the
/// text ([`scan::Cursor`]), entries judged as the walk passes them. Each entry of
/// `result.<field>` is kept (byte for byte) only if `allows` every value of its `key` member (an
/// entry without one is judged by the empty name; an entry that is not an object, or whose name
/// is not readable, is dropped), and `result.cacheScope: "public"` becomes `"private"`. A member
/// given twice, at any of these levels, is filtered each time, so a client that reads either one
/// sees only what it may call. `Ok(None)`: nothing to change. `strict`: the walk also checks
/// the whole text as `serde_json` would ([`scan::Cursor::strict`]) and refuses a repeated `id`,
/// `result` or `error` member (the response hooks' [`crate::pipeline::Reply::text_to_walk`]).
/// A changed list comes with where its top-level `id` value is, when it has exactly one.
fn filter_list(
    text: &str,
    strict: bool,
    field: &str,
    key: &str,
    allows: impl Fn(&str) -> bool,
) -> Result<Option<Filtered>, scan::ScanError> {
    // Whether the entry at the cursor stays (the cursor moves past it).
    let judge = |c: &mut scan::Cursor<'_>| -> Result<bool, scan::ScanError> {
        if c.peek() != Some(b'{') {
            c.skip()?;
            return Ok(false);
        }
        let (mut named, mut allowed) = (false, true);
        c.object(|c, k| {
            let value = c.skip()?;
            if scan::key_is(k, key) {
                named = true;
                allowed &= match value.as_bytes().first() {
                    Some(b'"') => scan::string_text(value).is_ok_and(|name| allows(&name)),
                    // A name of another type is judged by the empty name.
                    _ => allows(""),
                };
            }
            Ok(())
        })?;
        Ok(if named { allowed } else { allows("") })
    };
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut c = if strict {
        scan::Cursor::strict(text)
    } else {
        scan::Cursor::new(text)
    };
    let separator = |out: &mut String| {
        if !matches!(out.as_bytes().last(), Some(b'{' | b'[')) {
            out.push(',');
        }
    };
    // A strict walk is also the message's first full read: what the response hooks' check
    // refuses (a repeated id, result or error), it refuses too.
    let mut once = crate::pipeline::AnswerMembers::default();
    let (mut id_at, mut ids) = (None, 0);
    out.push('{');
    c.object(|c, k| {
        if strict {
            once.note(k)?;
        }
        separator(&mut out);
        out.push_str(k);
        out.push(':');
        if !(scan::key_is(k, "result") && c.peek() == Some(b'{')) {
            let value = c.skip()?;
            if scan::key_is(k, "id") {
                ids += 1;
                id_at = Some(out.len()..out.len() + value.len());
            }
            out.push_str(value);
            return Ok(());
        }
        out.push('{');
        c.object(|c, k| {
            separator(&mut out);
            out.push_str(k);
            out.push(':');
            if scan::key_is(k, field) && c.peek() == Some(b'[') {
                out.push('[');
                c.array(|c| {
                    let start = c.pos();
                    if judge(c)? {
                        separator(&mut out);
                        out.push_str(&text[start..c.pos()]);
                    } else {
                        changed = true;
                    }
                    Ok(())
                })?;
                out.push(']');
                return Ok(());
            }
            let value = c.skip()?;
            if scan::key_is(k, "cacheScope")
                && scan::string_text(value).is_ok_and(|scope| scope == "public")
            {
                // A list filtered per caller must not be cached for everyone.
                out.push_str(r#""private""#);
                changed = true;
            } else {
                out.push_str(value);
            }
            Ok(())
        })?;
        out.push('}');
        Ok(())
    })?;
    c.end()?;
    out.push('}');
    Ok(changed.then(|| (out, id_at.filter(|_| ids == 1))))
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

    /// The list filter works on the text: entries kept byte for byte, every spelling and every
    /// repetition of a member filtered, unreadable entries dropped.
    #[test]
    fn lists_are_filtered_as_text_whatever_the_spelling() {
        let allows = |name: &str| !name.starts_with("delete");
        // Text as a plugin may leave it (a strict walk, for the upstream's unchecked text, refuses
        // a repeated result outright: below).
        let filter = |text: &str| {
            let (out, id_at) = filter_list(text, false, "tools", "name", allows).unwrap()?;
            // A changed list says where its one id is (none when it has none or two).
            let ids = scan::members(&out).unwrap();
            let ids: Vec<_> = ids.iter().filter(|m| m.is("id")).collect();
            match id_at {
                Some(at) => assert_eq!(
                    Some(&out[at]),
                    (ids.len() == 1).then(|| ids[0].value),
                    "{out}"
                ),
                None => assert_ne!(ids.len(), 1, "{out}"),
            }
            Some(out)
        };
        let names = |text: &str| -> Vec<Vec<String>> {
            // Every `tools` array of every `result`, as a client that reads either would see.
            let mut out = Vec::new();
            for result in scan::members(text).unwrap() {
                if !result.is("result") {
                    continue;
                }
                for tools in scan::members(result.value).unwrap() {
                    if tools.is("tools") {
                        let tools: Vec<serde_json::Value> =
                            serde_json::from_str(tools.value).unwrap();
                        out.push(
                            tools
                                .iter()
                                .map(|t| t["name"].as_str().unwrap_or("?").to_string())
                                .collect(),
                        );
                    }
                }
            }
            out
        };
        // Nothing denied, nothing public: the upstream's text goes on as it is.
        assert_eq!(
            filter(r#"{"jsonrpc":"2.0","id":"x","result":{"tools":[{"name":"a"}]}}"#),
            None
        );
        // Kept entries keep their bytes (spacing, key order, escapes).
        let out = filter(
            r#"{"id":"x","result":{"tools":[{"name" : "s\u0065arch", "x":[1, 2]},{"name":"delete_repo"}],"cacheScope":"public"}}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"id":"x","result":{"tools":[{"name" : "s\u0065arch", "x":[1, 2]}],"cacheScope":"private"}}"#
        );
        // Re-spelled keys and values are read as a client reads them.
        let out = filter(
            r#"{"id":"x","r\u0065sult":{"t\u006fols":[{"n\u0061me":"d\u0065lete_repo"},{"name":"ok"}],"cacheScope":"publ\u0069c"}}"#,
        )
        .unwrap();
        assert_eq!(names(&out), vec![vec!["ok"]]);
        assert!(out.contains(r#""cacheScope":"private""#), "{out}");
        // Repeated members: each result, each tools array, each name is judged.
        let out = filter(
            r#"{"id":"x","result":{"tools":[{"name":"delete_a"}],"tools":[{"name":"ok"},{"name":"delete_b"}]},"result":{"tools":[{"name":"ok","name":"delete_c"},{"name":"fine"}]}}"#,
        )
        .unwrap();
        assert_eq!(names(&out), vec![vec![], vec!["ok"], vec!["fine"]]);
        // Entries that are not objects are dropped; one without a name is judged by "".
        let out = filter(
            r#"{"id":"x","result":{"tools":["delete_x",7,null,{"title":"nameless"},{"name":5}]}}"#,
        )
        .unwrap();
        assert_eq!(names(&out), vec![vec!["?", "?"]]);
        let deny_empty = filter_list(
            r#"{"id":"x","result":{"tools":[{"title":"nameless"},{"name":"a"}]}}"#,
            true,
            "tools",
            "name",
            |n: &str| !n.is_empty(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(names(&deny_empty.0), vec![vec!["a"]]);
        // A result that is not an object, or a list that is not an array, is left alone.
        assert_eq!(filter(r#"{"id":"x","result":[{"name":"delete_a"}]}"#), None);
        assert_eq!(filter(r#"{"id":"x","result":{"tools":"delete_a"}}"#), None);
        // What is not a JSON object cannot be judged.
        assert!(filter_list(r#"["result"]"#, true, "tools", "name", allows).is_err());
        // A strict walk refuses what the response hooks' check refuses.
        for twice in [
            r#"{"id":"x","result":{"tools":[]},"result":{"tools":[]}}"#,
            r#"{"id":"x","result":{"tools":[]},"id":"y"}"#,
            r#"{"error":{},"id":"x","result":{"tools":[]},"error":{}}"#,
        ] {
            assert!(
                filter_list(twice, true, "tools", "name", allows).is_err(),
                "{twice}"
            );
            assert!(crate::pipeline::check_message(twice).is_err(), "{twice}");
        }
        // A strict walk also checks what it skips (an entry's schema); the fast one, for text
        // already checked, does not.
        let bad = r#"{"id":"x","result":{"tools":[{"name":"a","inputSchema":{"type":"o\q"}}]}}"#;
        assert!(filter_list(bad, true, "tools", "name", allows).is_err());
        assert!(filter_list(bad, false, "tools", "name", allows).is_ok());
        assert!(
            filter_list(
                r#"{"result":{"tools":[{"name":"a"}"#,
                false,
                "tools",
                "name",
                allows
            )
            .is_err()
        );
    }

    /// Judging by name with the caller's rules chosen once agrees with judging each call.
    #[test]
    fn judging_names_agrees_with_judging_calls() {
        let mut deny_ci = rule("1", Effect::Deny);
        deny_ci.clients = pats(&["ci-*"]);
        deny_ci.tools = pats(&["create_*"]);
        let mut deny_server = rule("2", Effect::Deny);
        deny_server.servers = pats(&["billing"]);
        let mut allow_search = rule("3", Effect::Allow);
        allow_search.tools = pats(&["search_*", "{get,list}_*"]);
        let mut deny_method = rule("4", Effect::Deny);
        deny_method.methods = pats(&["prompts/get"]);
        let mut deny_prompt = rule("5", Effect::Deny);
        deny_prompt.prompts = pats(&["secret_*"]);
        for default in [Effect::Allow, Effect::Deny] {
            let p = PolicyConfig {
                default,
                rules: vec![
                    deny_ci.clone(),
                    deny_server.clone(),
                    allow_search.clone(),
                    deny_method.clone(),
                    deny_prompt.clone(),
                ],
            };
            for client in ["ci-bot", "alice"] {
                for server in ["billing", "gh"] {
                    for call in ["tools/call", "prompts/get", "resources/read"] {
                        let judge = p.judge_names(client, server, call);
                        for name in ["create_x", "search_y", "get_z", "secret_p", "other", ""] {
                            let s = Subject {
                                client,
                                server,
                                method: call,
                                target: Some(name),
                            };
                            assert_eq!(
                                judge.allows(name),
                                p.judge(&s).effect == Effect::Allow,
                                "{default:?} {client} {server} {call} {name}"
                            );
                        }
                    }
                }
            }
        }
    }
}
