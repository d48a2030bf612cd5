//! The `pipeline` lists (global and per route) and `server.public_url`. Each stage's own
//! section is checked beside the stage (`stages/<stage>/config.rs`).

use std::sync::Arc;

use super::{StageName, Validator};

impl Validator<'_> {
    pub(super) fn public_url(&mut self, text: &str) -> Option<String> {
        self.http_url("server.public_url", text)
            .map(|u| u.as_str().trim_end_matches('/').to_string())
    }

    pub(super) fn pipeline(
        &mut self,
        path: &str,
        list: &[String],
        configured: &dyn Fn(&StageName) -> bool,
    ) -> Vec<StageName> {
        let mut out = Vec::new();
        for (i, name) in list.iter().enumerate() {
            let item = format!("{path}[{i}]");
            let stage = StageName::BUILT_IN
                .into_iter()
                .find(|s| s.as_str() == name)
                .unwrap_or_else(|| StageName::Plugin(Arc::from(name.as_str())));
            if !configured(&stage) {
                let message = match stage {
                    StageName::Plugin(_) => format!(
                        "unknown stage `{name}` (built-in stages: auth, rate_limit, policy; plugins are declared under `plugins:`)"
                    ),
                    _ => format!(
                        "stage `{name}` is listed but its `{name}:` section is not configured"
                    ),
                };
                self.error(&item, message);
            } else if out.contains(&stage) {
                self.error(&item, format!("stage `{name}` is listed twice"));
            } else {
                out.push(stage);
            }
        }
        out
    }
}
