//! The `policy:` section: its YAML schema and its checks (each error at its key's line),
//! compiled into [`PolicyConfig`].

use serde::Deserialize;

use super::{Effect, PolicyConfig, Rule};
use crate::config::Validator;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPolicy {
    default: Option<String>,
    rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRule {
    name: Option<String>,
    clients: Option<Vec<String>>,
    servers: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    tools: Option<Vec<String>>,
    prompts: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    decision: Option<String>,
    reason: Option<String>,
}

impl Validator<'_> {
    fn effect(&mut self, path: &str, text: &str) -> Option<Effect> {
        match text {
            "allow" => Some(Effect::Allow),
            "deny" => Some(Effect::Deny),
            other => {
                self.error(path, format!("`{other}` is not `allow` or `deny`"));
                None
            }
        }
    }

    pub(crate) fn policy(&mut self, raw: RawPolicy) -> Option<PolicyConfig> {
        let default = match raw.default {
            None => Effect::Allow,
            Some(text) => self
                .effect("policy.default", &text)
                .unwrap_or(Effect::Allow),
        };
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, r) in raw.rules.into_iter().enumerate() {
            let path = format!("policy.rules[{i}]");
            let effect = match r.decision {
                Some(text) => match self.effect(&format!("{path}.decision"), &text) {
                    Some(e) => e,
                    None => continue,
                },
                None => {
                    self.missing(&format!("{path}.decision"), "required: `allow` or `deny`");
                    continue;
                }
            };
            rules.push(Rule {
                label: r.name.clone().unwrap_or_else(|| format!("#{}", i + 1)),
                clients: self.patterns(&format!("{path}.clients"), r.clients),
                servers: self.patterns(&format!("{path}.servers"), r.servers),
                methods: self.patterns(&format!("{path}.methods"), r.methods),
                tools: self.patterns(&format!("{path}.tools"), r.tools),
                prompts: self.patterns(&format!("{path}.prompts"), r.prompts),
                resources: self.patterns(&format!("{path}.resources"), r.resources),
                effect,
                reason: r.reason,
            });
        }
        Some(PolicyConfig { default, rules })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::assert_errors_at;

    /// Each mistake in `policy:` is reported at its key, with a line.
    #[test]
    fn policy_section_errors() {
        assert_errors_at(&[
            (
                "policy:\n  default: maybe\n",
                "policy.default",
                "not `allow` or `deny`",
            ),
            (
                "policy:\n  rules:\n    - tools: [a]\n",
                "policy.rules[0].decision",
                "required",
            ),
            (
                "policy:\n  rules:\n    - {tools: [a], decision: perhaps}\n",
                "policy.rules[0].decision",
                "not `allow` or `deny`",
            ),
            (
                "policy:\n  rules:\n    - {tools: [\"[oops\"], decision: deny}\n",
                "policy.rules[0].tools[0]",
                "not a valid pattern",
            ),
            (
                "policy:\n  rules:\n    - {tools: [a], decision: deny, colour: red}\n",
                "policy.rules[0].colour",
                "unknown key",
            ),
        ]);
    }
}
