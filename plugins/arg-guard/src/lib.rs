//! Argument-level authorization: per tool, which arguments may be passed, by whom, and with
//! which values. A call that breaks a rule is refused with JSON-RPC -32602 naming the argument
//! and the rule, before the upstream sees it. See README.md for the configuration.

use std::collections::BTreeMap;

use mcpgate_plugin_sdk::{Action, Plugin, Registration, Request, Value, export_plugin};
use serde::Deserialize;
use wildmatch::WildMatch;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Type {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl Type {
    fn matches(self, v: &Value) -> bool {
        match self {
            Type::String => v.is_string(),
            Type::Integer => v.is_i64() || v.is_u64(),
            Type::Number => v.is_number(),
            Type::Boolean => v.is_boolean(),
            Type::Array => v.is_array(),
            Type::Object => v.is_object(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ArgRule {
    #[serde(rename = "type")]
    kind: Option<Type>,
    /// Allowed values (JSON values, compared exactly).
    #[serde(rename = "enum")]
    one_of: Option<Vec<Value>>,
    /// String values must match one of these `*` patterns.
    allow: Option<Vec<String>>,
    /// String values must not match any of these `*` patterns.
    deny: Vec<String>,
    max_length: Option<usize>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    /// Only these callers (`*` patterns) may pass this argument at all.
    callers: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ToolRule {
    /// Only these callers (`*` patterns) may call the tool.
    callers: Option<Vec<String>>,
    required: Vec<String>,
    /// Whether arguments without a rule are accepted (default: no).
    additional_arguments: bool,
    arguments: BTreeMap<String, ArgRule>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Unknown {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What happens to tools without rules.
    #[serde(default = "allow")]
    unknown_tools: Unknown,
    tools: BTreeMap<String, ToolRule>,
}

fn allow() -> Unknown {
    Unknown::Allow
}

fn patterns(list: &[String]) -> Vec<WildMatch> {
    list.iter().map(|p| WildMatch::new(p)).collect()
}

struct Arg {
    rule: ArgRule,
    allow: Option<Vec<WildMatch>>,
    deny: Vec<WildMatch>,
    callers: Option<Vec<WildMatch>>,
}

struct Tool {
    callers: Option<Vec<WildMatch>>,
    required: Vec<String>,
    additional: bool,
    arguments: BTreeMap<String, Arg>,
}

pub struct ArgGuard {
    unknown: Unknown,
    tools: BTreeMap<String, Tool>,
}

impl ArgGuard {
    pub fn new(config: Config) -> Result<Self, String> {
        let mut tools = BTreeMap::new();
        for (name, t) in config.tools {
            for r in &t.required {
                if !t.additional_arguments && !t.arguments.contains_key(r) {
                    return Err(format!(
                        "tools.{name}: required argument `{r}` has no rule and additional_arguments is false"
                    ));
                }
            }
            let mut arguments = BTreeMap::new();
            for (arg, rule) in t.arguments {
                if let (Some(lo), Some(hi)) = (rule.minimum, rule.maximum)
                    && lo > hi
                {
                    return Err(format!("tools.{name}.arguments.{arg}: minimum > maximum"));
                }
                arguments.insert(
                    arg,
                    Arg {
                        allow: rule.allow.as_deref().map(patterns),
                        deny: patterns(&rule.deny),
                        callers: rule.callers.as_deref().map(patterns),
                        rule,
                    },
                );
            }
            tools.insert(
                name,
                Tool {
                    callers: t.callers.as_deref().map(patterns),
                    required: t.required,
                    additional: t.additional_arguments,
                    arguments,
                },
            );
        }
        Ok(ArgGuard {
            unknown: config.unknown_tools,
            tools,
        })
    }

    /// Checks one call; `Err` is the message the client gets.
    pub fn check(&self, tool: &str, caller: &str, args: Option<&Value>) -> Result<(), String> {
        let Some(rules) = self.tools.get(tool) else {
            return match self.unknown {
                Unknown::Allow => Ok(()),
                Unknown::Deny => Err(format!("tool `{tool}` is not allowed through this gateway")),
            };
        };
        let allowed = |list: &Option<Vec<WildMatch>>| {
            list.as_ref()
                .is_none_or(|l| l.iter().any(|p| p.matches(caller)))
        };
        if !allowed(&rules.callers) {
            return Err(format!("`{caller}` may not call `{tool}`"));
        }
        let empty = serde_json::Map::new();
        let args = match args {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => return Err(format!("`{tool}` arguments must be an object")),
        };
        for r in &rules.required {
            if !args.contains_key(r) {
                return Err(format!("`{tool}` requires argument `{r}`"));
            }
        }
        for (name, value) in args {
            let Some(arg) = rules.arguments.get(name) else {
                if rules.additional {
                    continue;
                }
                return Err(format!("`{tool}` does not accept argument `{name}`"));
            };
            let bad = |why: String| Err(format!("argument `{name}` of `{tool}` {why}"));
            if !allowed(&arg.callers) {
                return bad(format!("may not be set by `{caller}`"));
            }
            let rule = &arg.rule;
            if let Some(t) = rule.kind
                && !t.matches(value)
            {
                return bad(format!("must be of type {t:?}").to_lowercase());
            }
            if let Some(values) = &rule.one_of
                && !values.contains(value)
            {
                let list: Vec<String> = values.iter().map(Value::to_string).collect();
                return bad(format!("must be one of {}", list.join(", ")));
            }
            if let Some(s) = value.as_str() {
                if let Some(max) = rule.max_length
                    && s.chars().count() > max
                {
                    return bad(format!("must be at most {max} characters"));
                }
                if arg.deny.iter().any(|p| p.matches(s)) {
                    return bad("has a value that is not allowed".into());
                }
                if let Some(allow) = &arg.allow
                    && !allow.iter().any(|p| p.matches(s))
                {
                    return bad("has a value that is not allowed".into());
                }
            }
            if let Some(n) = value.as_f64() {
                if let Some(min) = rule.minimum
                    && n < min
                {
                    return bad(format!("must be at least {min}"));
                }
                if let Some(max) = rule.maximum
                    && n > max
                {
                    return bad(format!("must be at most {max}"));
                }
            }
        }
        Ok(())
    }
}

impl Plugin for ArgGuard {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        ArgGuard::new(config)
    }

    fn registration(&self) -> Registration {
        Registration::new().requests(["tools/call"])
    }

    fn on_request(&self, req: &Request) -> Action {
        let Some(tool) = req.tool() else {
            return Action::Continue;
        };
        match self.check(tool, &req.client_key(), req.arguments()) {
            Ok(()) => Action::Continue,
            Err(message) => Action::invalid_params(message),
        }
    }
}

export_plugin!(ArgGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use mcpgate_plugin_sdk::json;

    fn guard(config: Value) -> ArgGuard {
        ArgGuard::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    #[test]
    fn rules_table() {
        let g = guard(json!({
            "unknown_tools": "deny",
            "tools": {
                "run_query": {
                    "required": ["sql"],
                    "arguments": {
                        "sql": {"type": "string", "allow": ["SELECT *"], "deny": ["*;*"], "max_length": 40},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                        "env": {"enum": ["dev", "staging"]},
                        "force": {"type": "boolean", "callers": ["admin-*"]}
                    }
                },
                "drop_table": {"callers": ["admin-*"], "additional_arguments": true}
            }
        }));
        let ok = |tool: &str, who: &str, args: Value| g.check(tool, who, Some(&args));
        assert_eq!(
            ok("run_query", "bob", json!({"sql": "SELECT 1", "limit": 5})),
            Ok(())
        );
        let cases = [
            (
                "run_query",
                "bob",
                json!({"limit": 5}),
                "requires argument `sql`",
            ),
            (
                "run_query",
                "bob",
                json!({"sql": "DELETE FROM t"}),
                "`sql` of `run_query` has a value that is not allowed",
            ),
            (
                "run_query",
                "bob",
                json!({"sql": "SELECT 1; DROP t"}),
                "not allowed",
            ),
            (
                "run_query",
                "bob",
                json!({"sql": "SELECT 1", "limit": 500}),
                "must be at most 100",
            ),
            (
                "run_query",
                "bob",
                json!({"sql": "SELECT 1", "limit": 1.5}),
                "must be of type integer",
            ),
            (
                "run_query",
                "bob",
                json!({"sql": "SELECT 1", "env": "prod"}),
                "must be one of \"dev\", \"staging\"",
            ),
            (
                "run_query",
                "bob",
                json!({"sql": "SELECT 1", "force": true}),
                "may not be set by `bob`",
            ),
            (
                "run_query",
                "bob",
                json!({"sql": "SELECT 1", "user": "x"}),
                "does not accept argument `user`",
            ),
            (
                "drop_table",
                "bob",
                json!({}),
                "`bob` may not call `drop_table`",
            ),
            (
                "other",
                "bob",
                json!({}),
                "not allowed through this gateway",
            ),
        ];
        for (tool, who, args, want) in cases {
            let err = ok(tool, who, args.clone()).unwrap_err();
            assert!(err.contains(want), "{tool} {args}: {err}");
        }
        assert_eq!(
            ok(
                "run_query",
                "admin-1",
                json!({"sql": "SELECT 1", "force": true})
            ),
            Ok(())
        );
        assert_eq!(ok("drop_table", "admin-1", json!({"anything": 1})), Ok(()));
    }

    #[test]
    fn config_errors() {
        let err = |c: Value| {
            ArgGuard::new(serde_json::from_value(c).unwrap())
                .err()
                .unwrap()
        };
        assert!(
            err(json!({"tools": {"t": {"required": ["x"]}}}))
                .contains("required argument `x` has no rule")
        );
        assert!(
            err(json!({"tools": {"t": {"arguments": {"n": {"minimum": 5, "maximum": 1}}}}}))
                .contains("minimum > maximum")
        );
        assert!(
            serde_json::from_value::<Config>(json!({"tools": {"t": {"argumnts": {}}}})).is_err()
        );
    }

    // The hook itself, on the request view the gateway hands over.
    #[test]
    fn the_hook_refuses_bad_arguments_with_invalid_params() {
        let g: ArgGuard = mcpgate_plugin_sdk::testing::init(json!({
            "tools": {"t": {"required": ["x"], "arguments": {"x": {"type": "string"}}}}
        }))
        .unwrap();
        let call = |arguments: Value| {
            g.on_request(
                &mcpgate_plugin_sdk::testing::request("tools/call")
                    .tool("t")
                    .arguments(arguments)
                    .build(),
            )
        };
        assert_eq!(call(json!({"x": "ok"})), Action::Continue);
        let Action::Reject { http_status, error } = call(json!({"x": 7})) else {
            panic!("a number where a string belongs is refused")
        };
        assert_eq!((http_status, error.code), (200, -32602));
        assert!(matches!(call(json!({})), Action::Reject { .. }));
    }
}
