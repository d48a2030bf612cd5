//! `upstreams.<name>` with `members`: a federated route, serving several other upstreams (HTTP or
//! stdio) at one endpoint, their tools and prompts under prefixed names (see `crate::federation`).

use std::sync::Arc;

use serde::Deserialize;

use super::{Upstream, Validator};

/// `prefix` when absent: each member's tools and prompts as `<member>_<name>`.
pub const DEFAULT_PREFIX: &str = "{member}_";
/// The placeholder URL of a federated route until its endpoint listens (never connected to).
pub const FEDERATION_PLACEHOLDER_URL: &str = "http://federation.invalid/mcp";

/// One entry of `members`: a name, or `{name, prefix}` to give that member its own prefix.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawMember {
    Name(String),
    Spec(RawMemberSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMemberSpec {
    name: String,
    prefix: Option<String>,
}

/// A federated route's members, in the order the config lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    pub members: Vec<FederationMember>,
    /// How long a legacy member's list is served from the route's cache (until a
    /// `list_changed` from it comes first); `None` (the default): legacy lists are not cached.
    /// 2026-07-28 lists are cached as their own `ttlMs` and `cacheScope` say.
    pub catalog_ttl: Option<std::time::Duration>,
}

/// One member: the upstream it is, and the prefix its tool and prompt names get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationMember {
    pub name: Arc<str>,
    /// The prefix as applied (`{member}` already replaced by the member's name).
    pub prefix: String,
}

/// Whether `prefix` (after `{member}` is replaced) only uses characters tool names may hold.
fn prefix_chars_ok(prefix: &str) -> bool {
    prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

impl Validator<'_> {
    /// A federated route's `members` and `prefix`, checked at `path` (`upstreams.<name>`);
    /// whether the members exist is checked once every upstream is known
    /// ([`Validator::federation_members`]).
    pub(super) fn federation(
        &mut self,
        path: &str,
        members: Vec<RawMember>,
        prefix: Option<String>,
        catalog_ttl: Option<u64>,
    ) -> Option<Federation> {
        let template = prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        if members.is_empty() {
            self.error(
                &format!("{path}.members"),
                "a federated route needs at least one member (the names of other upstreams)",
            );
            return None;
        }
        let mut out = Vec::with_capacity(members.len());
        for (i, m) in members.into_iter().enumerate() {
            let (name, own) = match m {
                RawMember::Name(n) => (n, None),
                RawMember::Spec(s) => (s.name, s.prefix),
            };
            let at = format!("{path}.members[{i}]");
            let applied = own
                .as_deref()
                .unwrap_or(&template)
                .replace("{member}", &name);
            if !prefix_chars_ok(&applied) {
                let key = if own.is_some() {
                    format!("{at}.prefix")
                } else {
                    format!("{path}.prefix")
                };
                self.error(
                    &key,
                    format!(
                        "the prefix `{applied}` may only use letters, digits, `_`, `-`, `.` and `/` (tool names allow no other), with `{{member}}` for the member's name"
                    ),
                );
            }
            if out.iter().any(|m: &FederationMember| *m.name == *name) {
                self.error(&at, format!("`{name}` is listed twice"));
                continue;
            }
            if let Some(other) = out.iter().find(|m| m.prefix == applied) {
                self.error(
                    &at,
                    format!(
                        "`{name}` and `{}` both get the prefix `{applied}`: their tools would collide (give one its own `prefix`)",
                        other.name
                    ),
                );
            }
            out.push(FederationMember {
                name: Arc::from(name),
                prefix: applied,
            });
        }
        Some(Federation {
            members: out,
            catalog_ttl: catalog_ttl
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis),
        })
    }

    /// Each federated route's members must be other upstreams of this config, and not federated
    /// routes themselves.
    pub(super) fn federation_members(&mut self, upstreams: &[Arc<Upstream>]) {
        for u in upstreams {
            let Some(f) = &u.federation else { continue };
            for (i, m) in f.members.iter().enumerate() {
                let at = format!("upstreams.{}.members[{i}]", u.name);
                match upstreams.iter().find(|o| o.name == m.name) {
                    None => self.error(
                        &at,
                        format!(
                            "no upstream is named `{}` (members are the names of other upstreams)",
                            m.name
                        ),
                    ),
                    Some(o) if o.name == u.name => {
                        self.error(&at, "a federated route cannot be its own member")
                    }
                    Some(o) if o.federation.is_some() => self.error(
                        &at,
                        format!(
                            "`{}` is a federated route itself: list its members instead",
                            o.name
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
}
