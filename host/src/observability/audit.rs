//! The audit log: one JSON line per request, written by a thread of its own.
//!
//! The request path hands a finished record to a bounded queue with `try_send` and never waits:
//! when the sink is slower than the traffic and the queue is full, the record is dropped and
//! counted (`mcpgate_audit_dropped_total`). The writer serialises and writes records in batches
//! and flushes whenever the queue runs empty, so a record reaches the sink within one batch.
//!
//! Secrets are never written: no request or response headers are logged at all, and with
//! `log_bodies: true` the bodies are redacted (values under keys that name a secret, and any
//! string containing the caller's credential or the upstream's credential) before they are queued.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use prometheus::{IntCounter, Opts, Registry};
use serde::Serialize;
use serde_json::Value;

use crate::config::{AuditConfig, AuditSink};

/// One request, as the audit log tells it.
#[derive(Debug, Serialize)]
pub struct AuditRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: Arc<str>,
    /// The authenticated caller (`null` when the route does not authenticate or auth failed).
    pub caller: Option<Arc<str>>,
    pub peer: Option<IpAddr>,
    pub server: Arc<str>,
    pub era: &'static str,
    pub http_method: &'static str,
    /// The JSON-RPC method (`batch` for a batch; absent for GET and DELETE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<Arc<str>>,
    /// The prompt name or resource URI a `prompts/get` / `resources/read` names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Arc<str>>,
    /// The JSON-RPC id, as JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<String>,
    /// A batch's messages (method and target of each).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<AuditCall>,
    /// The gateway's id of the legacy session (not the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// forwarded, auth_failed, rate_limited, denied, plugin_rejected, responded,
    /// invalid, session_not_found, upstream_unavailable, upstream_timeout, state_unavailable, error.
    pub decision: &'static str,
    /// The stage that decided (absent when every stage let the request through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The policy rule that denied (its name or 1-based position).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    pub streamed: bool,
    /// The response ended early (client gone, upstream broke off or went idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_error: Option<&'static str>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct AuditCall {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Arc<str>>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The queue to the writer thread, and its counters.
pub struct AuditLog {
    tx: SyncSender<Msg>,
    dropped: IntCounter,
    pub log_bodies: bool,
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("log_bodies", &self.log_bodies)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the sink (a file is created or appended to) and starts the writer thread.
    pub fn start(cfg: &AuditConfig, registry: &Registry) -> Result<AuditLog, String> {
        let sink = Self::open(&cfg.sink)?;
        Self::with_sink(cfg, registry, sink)
    }

    fn open(sink: &AuditSink) -> Result<Box<dyn std::io::Write + Send>, String> {
        Ok(match sink {
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        format!(
                            "cannot create the audit log's folder {}: {e}",
                            dir.display()
                        )
                    })?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open the audit log {}: {e}", path.display()))?;
                Box::new(file)
            }
        })
    }

    fn with_sink(
        cfg: &AuditConfig,
        registry: &Registry,
        sink: Box<dyn std::io::Write + Send>,
    ) -> Result<AuditLog, String> {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid metric name");
            if let Err(e) = registry.register(Box::new(c.clone())) {
                tracing::warn!(error = %e, "metric family not registered");
            }
            c
        };
        let written = counter(
            "mcpgate_audit_records_total",
            "Audit records written to the sink",
        );
        let dropped = counter(
            "mcpgate_audit_dropped_total",
            "Audit records dropped because the queue was full or the sink failed",
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue);
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("mcpgate-audit".into())
            .spawn(move || writer(rx, sink, &written, &lost))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(AuditLog {
            tx,
            dropped,
            log_bodies: cfg.log_bodies,
            max_body_bytes: cfg.max_body_bytes,
        })
    }

    /// Queues a record; never blocks. A full queue drops it (counted).
    pub fn record(&self, record: AuditRecord) {
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Waits (up to `timeout`) until every record queued so far is written and flushed.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = std::sync::mpsc::channel();
        // A full queue is waited for here: flushing is for shutdown and tests, not requests.
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = Msg::Flush(done);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_ok()
    }
}

/// After writing a batch the writer lingers this long before taking the next one: under load,
/// one wake-up, one `write` and one flush carry every record of the interval (a request then
/// costs a queue push, nothing more); when idle, a record is written within this delay.
const LINGER: Duration = Duration::from_millis(10);

fn writer(
    rx: Receiver<Msg>,
    mut sink: Box<dyn std::io::Write + Send>,
    written: &IntCounter,
    dropped: &IntCounter,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut count = 0u64;
        // Drain what is queued, then write it in one go.
        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
            match msg {
                Msg::Record(r) => {
                    if serde_json::to_writer(&mut buf, &r).is_ok() {
                        buf.push(b'\n');
                        count += 1;
                    } else {
                        dropped.inc();
                    }
                }
                Msg::Flush(done) => waiting.push(done),
            }
            if buf.len() > 1 << 20 {
                break;
            }
        }
        match sink.write_all(&buf).and_then(|()| sink.flush()) {
            Ok(()) => written.inc_by(count),
            Err(e) => {
                dropped.inc_by(count);
                tracing::warn!(error = %e, records = count, "audit log write failed");
            }
        }
        buf.clear();
        let flushed = !waiting.is_empty();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if !flushed {
            std::thread::sleep(LINGER);
        }
    }
}

/// Keys whose values are never logged (compared lower-case, without `-` and `_`).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "cookie",
    "credential",
    "privatekey",
];

const REDACTED: &str = "[REDACTED]";

fn secret_key(key: &str) -> bool {
    let norm: String = key
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_KEYS.iter().any(|s| norm.contains(s))
}

/// A body as the audit log may show it: parsed JSON with secret-named values and any string
/// containing one of `secrets` replaced; a body whose redacted form is over `max` bytes is cut
/// (and says so). Redaction comes first, on the whole body: a cut made before it could split a
/// secret (or a secret-named key from its value) so that the redactor no longer recognises it.
pub fn redacted_body(bytes: &[u8], secrets: &[String], max: usize) -> Value {
    let mut v = serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
    scrub(&mut v, secrets);
    let text = match &v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.len() <= max {
        return v;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    serde_json::json!({"truncated": true, "bytes": bytes.len(), "head": &text[..end]})
}

fn scrub(v: &mut Value, secrets: &[String]) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if secret_key(k) && !val.is_object() && !val.is_array() && !val.is_null() {
                    *val = Value::String(REDACTED.into());
                } else {
                    scrub(val, secrets);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| scrub(i, secrets)),
        Value::String(s) => {
            for secret in secrets {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), REDACTED);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_lose_their_secrets() {
        let body =
            br#"{"params":{"arguments":{"q":"x","api_key":"k1","nested":{"Access-Token":"t"},
            "note":"use sk-live-123456 please","max":3}}}"#;
        let v = redacted_body(body, &["sk-live-123456".into()], 10_000);
        let args = &v["params"]["arguments"];
        assert_eq!(args["q"], "x");
        assert_eq!(args["api_key"], REDACTED);
        assert_eq!(args["nested"]["Access-Token"], REDACTED);
        assert_eq!(args["note"], "use [REDACTED] please");
        assert_eq!(args["max"], 3);
        let cut = redacted_body(b"{\"a\":\"sk-live-123456\"}", &["sk-live-123456".into()], 8);
        assert_eq!(cut["truncated"], true);
        assert!(!cut.to_string().contains("sk-live"));
        // A cut anywhere never leaves part of a secret or of a secret-named value behind.
        let body = br#"{"jsonrpc":"2.0","params":{"arguments":{"password":"hunter2-hunter2","note":"key sk-live-123456 here","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}"#;
        for max in 1..body.len() {
            let v = redacted_body(body, &["sk-live-123456".into()], max);
            let text = v.to_string();
            for part in ["hunter", "sk-live", "live-123", "123456"] {
                assert!(!text.contains(part), "max {max}: {text}");
            }
        }
    }

    /// A sink that says when a write begins, then waits until the test lets it go.
    struct Stuck {
        entered: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    }

    impl std::io::Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_never_blocks_the_request_path() {
        let (release, wait) = std::sync::mpsc::channel();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let cfg = AuditConfig {
            sink: AuditSink::Stdout,
            log_bodies: false,
            queue: 8,
            max_body_bytes: 100,
        };
        let sink = Stuck {
            entered: entered_tx,
            release: wait,
        };
        let log = AuditLog::with_sink(&cfg, &Registry::new(), Box::new(sink)).unwrap();
        // The writer takes the first record and hangs in `write`...
        log.record(record(0));
        entered.recv().unwrap();
        // ...so the queue fills with 8 and the rest are dropped; none of the 1,000 calls waits
        // (else this test would hang).
        for i in 1..=1000 {
            log.record(record(i));
        }
        assert_eq!(log.dropped.get(), 1000 - 8);
        drop(release);
    }

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            time: SystemTime::now(),
            request_id: Arc::from(format!("r{i}")),
            caller: None,
            peer: None,
            server: Arc::from("s"),
            era: "legacy",
            http_method: "POST",
            method: Some("ping".into()),
            tool: None,
            target: None,
            jsonrpc_id: None,
            calls: vec![],
            session: None,
            decision: "forwarded",
            stage: None,
            rule: None,
            reason: None,
            status: 200,
            error_code: None,
            upstream_status: Some(200),
            streamed: false,
            stream_error: None,
            duration_ms: 1.0,
            request_body: None,
            response_body: None,
        }
    }

    #[test]
    fn records_reach_the_file_and_a_full_queue_drops() {
        let dir = std::env::temp_dir().join(format!("mcpgate-audit-{}", std::process::id()));
        let path = dir.join("a.jsonl");
        let registry = Registry::new();
        let log = AuditLog::start(
            &AuditConfig {
                sink: AuditSink::File(path.clone()),
                log_bodies: false,
                queue: 4,
                max_body_bytes: 100,
            },
            &registry,
        )
        .unwrap();
        for i in 0..3 {
            log.record(record(i));
        }
        assert!(log.flush(Duration::from_secs(10)));
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["request_id"].to_string())
            .collect();
        assert_eq!(ids, ["\"r0\"", "\"r1\"", "\"r2\""]);
        // Ten thousand records at once into a queue of four: some are dropped, none blocks,
        // and written + dropped accounts for every one.
        for i in 0..10_000 {
            log.record(record(i));
        }
        assert!(log.flush(Duration::from_secs(30)));
        let text = std::fs::read_to_string(&path).unwrap();
        let written = text.lines().count() as u64 - 3;
        assert!(log.dropped.get() > 0);
        assert_eq!(written + log.dropped.get(), 10_000);
        let _ = std::fs::remove_dir_all(dir);
    }
}
