//! The latest decisions, kept in memory for the admin dashboard: who asked what of which route
//! and what the gateway decided. Never bodies, arguments or credentials; bounded.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use super::Summary;

/// One decision, as the dashboard lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentDecision {
    pub at_unix_ms: u64,
    pub request_id: String,
    pub route: String,
    pub caller: Option<String>,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub decision: &'static str,
    pub stage: Option<String>,
    pub status: u16,
    pub duration_ms: f64,
}

/// A ring of the last decisions (`admin.recent_decisions`).
#[derive(Debug)]
pub struct RecentDecisions {
    ring: Mutex<VecDeque<RecentDecision>>,
    max: usize,
}

/// Text from a client, cut to a length a dashboard row can show.
fn short(text: &str) -> String {
    text.chars().take(120).collect()
}

impl RecentDecisions {
    pub fn new(max: usize) -> Self {
        RecentDecisions {
            ring: Mutex::new(VecDeque::with_capacity(max.min(1024))),
            max: max.max(1),
        }
    }

    pub(super) fn push(&self, s: &Summary, duration_ms: f64) {
        let at_unix_ms = super::unix_ms(s.time);
        let entry = RecentDecision {
            at_unix_ms,
            request_id: short(&s.request_id),
            route: short(&s.server),
            caller: s.caller.as_deref().map(short),
            // Requests without a JSON-RPC method (GET streams, DELETE) show the HTTP method.
            method: Some(
                s.method_name
                    .as_deref()
                    .map_or_else(|| s.http_method.to_string(), short),
            ),
            tool: s.tool.as_deref().map(short),
            decision: s.decision.as_str(),
            stage: s.stage.clone(),
            status: s.status,
            duration_ms: (duration_ms * 1000.0).round() / 1000.0,
        };
        let mut ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while ring.len() >= self.max {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The kept decisions, newest first.
    pub fn list(&self) -> Vec<RecentDecision> {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .rev()
            .cloned()
            .collect()
    }
}
