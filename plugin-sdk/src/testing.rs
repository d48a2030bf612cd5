//! Unit-test a plugin natively, with plain `cargo test`.
//!
//! [`request`] and [`response`] build the views the gateway hands a plugin; [`init`] builds the
//! plugin from a JSON config the way the gateway does. Outside WebAssembly, [`log`](crate::log),
//! [`kv`](crate::kv), [`metrics`](crate::metrics) and [`callout`](crate::callout) reach an
//! in-memory host kept per test thread (each `#[test]` starts with an empty one): read it back
//! with [`logs`], [`kv_value`], [`counter`] and [`observations`]; make the store fail with
//! [`kv_unavailable`]; answer callouts with [`on_callout`].
//!
//! ```
//! use mcpgate_plugin_sdk::testing::{self, request};
//! use mcpgate_plugin_sdk::{Action, Plugin, Registration, Request, json};
//!
//! struct Shout;
//! impl Plugin for Shout {
//!     type Config = serde_json::Value;
//!     fn init(_: serde_json::Value) -> Result<Self, String> { Ok(Shout) }
//!     fn registration(&self) -> Registration { Registration::new().requests(["tools/call"]) }
//!     fn on_request(&self, req: &Request) -> Action {
//!         mcpgate_plugin_sdk::log::info(format!("{} called", req.tool().unwrap_or("?")));
//!         Action::rewrite_arguments(json!({"text": "LOUD"}))
//!     }
//! }
//!
//! let shout: Shout = testing::init(json!({})).unwrap();
//! let action = shout.on_request(&request("tools/call").tool("echo").arguments(json!({"text": "hi"})).build());
//! assert_eq!(action, Action::rewrite_arguments(json!({"text": "LOUD"})));
//! assert_eq!(testing::logs(), vec![(testing::Level::Info, "echo called".to_string())]);
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bindings::mcpgate::plugin::callout as wit_callout;
use crate::{Era, Fields, Plugin, Request, Response};

pub use crate::bindings::mcpgate::plugin::log::Level;

/// Builds a plugin from its config as the gateway does: the YAML `config:` section arrives as
/// JSON and is deserialised into [`Plugin::Config`], then [`Plugin::init`] runs.
pub fn init<P: Plugin>(config: Value) -> Result<P, String> {
    let text = config.to_string();
    let config: P::Config =
        serde_json::from_str(&text).map_err(|e| format!("invalid config: {e}"))?;
    P::init(config)
}

/// A request with JSON-RPC method `method`, to refine with the builder's methods and
/// [`RequestBuilder::build`]. Defaults: route `test`, the legacy era, id `1`, caller
/// unauthenticated from `127.0.0.1`, no headers.
pub fn request(method: &str) -> RequestBuilder {
    RequestBuilder {
        method: method.to_string(),
        route: "test".into(),
        era: Era::Legacy,
        id: Some(json!(1)),
        target: None,
        arguments: None,
        caller: None,
        scopes: Vec::new(),
        remote_addr: Some("127.0.0.1".into()),
        headers: Vec::new(),
    }
}

/// Builder of a [`Request`] view (see [`request`]).
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: String,
    route: String,
    era: Era,
    id: Option<Value>,
    target: Option<String>,
    arguments: Option<Value>,
    caller: Option<String>,
    scopes: Vec<String>,
    remote_addr: Option<String>,
    headers: Vec<(String, String)>,
}

impl RequestBuilder {
    /// The tool of a `tools/call` (or the prompt of `prompts/get`): `params.name`.
    pub fn tool(mut self, name: &str) -> Self {
        self.target = Some(name.to_string());
        self
    }

    /// The resource URI of a `resources/read`: `params.uri`.
    pub fn uri(self, uri: &str) -> Self {
        self.tool(uri)
    }

    /// `params.arguments`.
    pub fn arguments(mut self, arguments: Value) -> Self {
        self.arguments = Some(arguments);
        self
    }

    /// The authenticated caller's id.
    pub fn caller(mut self, id: &str) -> Self {
        self.caller = Some(id.to_string());
        self
    }

    /// The caller's OAuth scopes.
    pub fn scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The client's IP address (`None`: unknown).
    pub fn remote_addr(mut self, addr: Option<&str>) -> Self {
        self.remote_addr = addr.map(str::to_string);
        self
    }

    /// A request header the plugin may see (the gateway lower-cases names).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The route (`/servers/<route>/mcp`).
    pub fn route(mut self, route: &str) -> Self {
        self.route = route.to_string();
        self
    }

    pub fn era(mut self, era: Era) -> Self {
        self.era = era;
        self
    }

    /// The JSON-RPC id; `None` makes a notification.
    pub fn id(mut self, id: Option<Value>) -> Self {
        self.id = id;
        self
    }

    pub fn build(self) -> Request<'static> {
        let mut params = serde_json::Map::new();
        if let Some(target) = &self.target {
            let key = if self.method.starts_with("resources/") {
                "uri"
            } else {
                "name"
            };
            params.insert(key.into(), json!(target));
        }
        if let Some(arguments) = &self.arguments {
            params.insert("arguments".into(), arguments.clone());
        }
        if self.era == Era::Modern {
            params.insert(
                "_meta".into(),
                json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"}),
            );
        }
        let mut message = json!({"jsonrpc": "2.0", "method": self.method, "params": params});
        if let Some(id) = &self.id {
            message["id"] = id.clone();
        }
        Request::from_fields(Fields {
            request_id: "test-request".into(),
            route: self.route,
            era: self.era,
            caller_id: self.caller,
            scopes: self.scopes,
            remote_addr: self.remote_addr,
            method: self.method,
            id: self.id.map(|i| i.to_string()),
            target: self.target,
            arguments: self.arguments.map(|a| a.to_string()),
            headers: self.headers,
            message: message.to_string(),
        })
    }
}

/// The upstream's answer to `request` with this JSON-RPC `result` (HTTP 200, not streamed).
pub fn response(request: &Request<'_>, result: Value) -> Response<'static> {
    answer(request, json!({"result": result}))
}

/// The upstream's JSON-RPC error answer to `request`.
pub fn error_response(request: &Request<'_>, code: i32, message: &str) -> Response<'static> {
    answer(
        request,
        json!({"error": {"code": code, "message": message}}),
    )
}

fn answer(request: &Request<'_>, mut body: Value) -> Response<'static> {
    body["jsonrpc"] = json!("2.0");
    if let Some(id) = request.id() {
        body["id"] = serde_json::from_str(id).unwrap_or(Value::Null);
    }
    Response::local(
        Request::from_fields(request.fields()),
        200,
        false,
        body.to_string(),
    )
}

/// The lines this test's plugin logged, in order.
pub fn logs() -> Vec<(Level, String)> {
    HOST.with(|h| h.borrow().logs.clone())
}

/// The value at `key` in this test's kv store (`None`: absent or expired).
pub fn kv_value(key: &str) -> Option<Vec<u8>> {
    host::kv::get(key).ok().flatten()
}

/// Makes every kv call of this test fail with `unavailable` (`true`), as a store that cannot be
/// reached does, or work again (`false`).
pub fn kv_unavailable(down: bool) {
    HOST.with(|h| h.borrow_mut().kv_down = down);
}

/// The total the plugin added to counter `name` with exactly these labels.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    HOST.with(|h| {
        h.borrow()
            .counters
            .get(&series(name, labels))
            .copied()
            .unwrap_or(0)
    })
}

/// The observations the plugin recorded in histogram `name` with exactly these labels.
pub fn observations(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    HOST.with(|h| {
        h.borrow()
            .histograms
            .get(&series(name, labels))
            .cloned()
            .unwrap_or_default()
    })
}

/// Answers this test's callouts with `f` (without it, every callout fails as `denied`).
pub fn on_callout(
    f: impl Fn(&wit_callout::Request) -> Result<wit_callout::Response, wit_callout::Error> + 'static,
) {
    HOST.with(|h| h.borrow_mut().callout = Some(Box::new(f)));
}

type Series = (String, Vec<(String, String)>);

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    (name.to_string(), labels)
}

type Callout =
    Box<dyn Fn(&wit_callout::Request) -> Result<wit_callout::Response, wit_callout::Error>>;

#[derive(Default)]
struct Host {
    logs: Vec<(Level, String)>,
    kv: HashMap<String, (Vec<u8>, Option<Instant>)>,
    kv_down: bool,
    counters: HashMap<Series, u64>,
    histograms: HashMap<Series, Vec<f64>>,
    callout: Option<Callout>,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

/// The in-memory host the SDK's capabilities reach outside WebAssembly, with the gateway's
/// semantics and limits (keys of 1 to 512 bytes, values up to 64 KiB, counters as decimal text).
pub(crate) mod host {
    use super::*;

    pub fn log(level: Level, message: &str) {
        HOST.with(|h| h.borrow_mut().logs.push((level, message.to_string())));
    }

    pub mod kv {
        use super::*;
        pub use crate::bindings::mcpgate::plugin::kv::Error;

        const MAX_KEY_BYTES: usize = 512;
        const MAX_VALUE_BYTES: usize = 64 * 1024;

        fn with<R>(
            key: &str,
            f: impl FnOnce(&mut HashMap<String, (Vec<u8>, Option<Instant>)>) -> Result<R, Error>,
        ) -> Result<R, Error> {
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(Error::Invalid(format!(
                    "keys must be 1 to {MAX_KEY_BYTES} bytes"
                )));
            }
            HOST.with(|h| {
                let mut h = h.borrow_mut();
                if h.kv_down {
                    return Err(Error::Unavailable(
                        "the test made the store unavailable".into(),
                    ));
                }
                let now = Instant::now();
                h.kv.retain(|_, (_, expires)| expires.is_none_or(|e| e > now));
                f(&mut h.kv)
            })
        }

        fn expiry(ttl_ms: Option<u64>) -> Option<Instant> {
            ttl_ms.map(|ms| Instant::now() + Duration::from_millis(ms))
        }

        pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
            with(key, |kv| Ok(kv.get(key).map(|(v, _)| v.clone())))
        }

        pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), Error> {
            if value.len() > MAX_VALUE_BYTES {
                return Err(Error::Invalid(format!(
                    "values must be at most {MAX_VALUE_BYTES} bytes"
                )));
            }
            with(key, |kv| {
                kv.insert(key.to_string(), (value.to_vec(), expiry(ttl_ms)));
                Ok(())
            })
        }

        pub fn delete(key: &str) -> Result<(), Error> {
            with(key, |kv| {
                kv.remove(key);
                Ok(())
            })
        }

        pub fn incr(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, Error> {
            with(key, |kv| {
                let (current, expires) = match kv.get(key) {
                    Some((v, expires)) => {
                        let n = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                            .ok_or_else(|| Error::Invalid("the value is not a counter".into()))?;
                        (n, *expires)
                    }
                    // A counter keeps the expiry of the call that created it.
                    None => (0, expiry(ttl_ms)),
                };
                let next = current
                    .checked_add(delta)
                    .ok_or_else(|| Error::Invalid("counter overflow".into()))?;
                kv.insert(key.to_string(), (next.to_string().into_bytes(), expires));
                Ok(next)
            })
        }
    }

    pub mod metrics {
        use super::*;

        fn key(name: &str, labels: &[(String, String)]) -> Series {
            let mut labels = labels.to_vec();
            labels.sort();
            (name.to_string(), labels)
        }

        pub fn counter_add(name: &str, value: u64, labels: &[(String, String)]) {
            HOST.with(|h| {
                *h.borrow_mut()
                    .counters
                    .entry(key(name, labels))
                    .or_default() += value
            });
        }

        pub fn histogram_observe(name: &str, value: f64, labels: &[(String, String)]) {
            HOST.with(|h| {
                h.borrow_mut()
                    .histograms
                    .entry(key(name, labels))
                    .or_default()
                    .push(value)
            });
        }
    }

    pub mod callout {
        use super::*;
        pub use wit_callout::{Error, Request, Response};

        pub fn send(req: &Request) -> Result<Response, Error> {
            // Out of the host while it runs: the test's function may use the host itself.
            let answer = HOST.with(|h| h.borrow_mut().callout.take());
            let result = match &answer {
                Some(f) => f(req),
                None => Err(Error::Denied(format!(
                    "no callout answers target `{}` in this test (testing::on_callout)",
                    req.target
                ))),
            };
            HOST.with(|h| h.borrow_mut().callout = answer);
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{callout, kv, metrics};

    #[test]
    fn the_in_memory_kv_keeps_the_gateway_s_rules() {
        assert_eq!(
            kv::incr("n", 2, Some(Duration::from_secs(60))).ok(),
            Some(2)
        );
        assert_eq!(kv::incr("n", -5, None).ok(), Some(-3));
        kv::set("s", b"text", None).unwrap();
        assert!(matches!(kv::incr("s", 1, None), Err(kv::Error::Invalid(_))));
        kv::set("max", i64::MAX.to_string().as_bytes(), None).unwrap();
        assert!(matches!(
            kv::incr("max", 1, None),
            Err(kv::Error::Invalid(_))
        ));
        assert!(matches!(kv::get(""), Err(kv::Error::Invalid(_))));
        assert!(matches!(
            kv::get(&"k".repeat(513)),
            Err(kv::Error::Invalid(_))
        ));
        assert!(matches!(
            kv::set("big", &vec![0; 64 * 1024 + 1], None),
            Err(kv::Error::Invalid(_))
        ));
        kv::set("brief", b"x", Some(Duration::from_millis(1))).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(kv::get("brief"), Ok(None)));
        assert_eq!(kv_value("n"), Some(b"-3".to_vec()));
        kv::delete("n").unwrap();
        assert_eq!(kv_value("n"), None);
        kv_unavailable(true);
        assert!(matches!(kv::get("s"), Err(kv::Error::Unavailable(_))));
    }

    #[test]
    fn each_test_thread_starts_with_an_empty_host() {
        assert_eq!(kv_value("n"), None);
        assert!(logs().is_empty());
        assert_eq!(counter("c", &[]), 0);
    }

    #[test]
    fn metrics_are_kept_by_name_and_labels_in_any_order() {
        metrics::counter_add("hits", 2, &[("a", "1"), ("b", "2")]);
        metrics::counter_add("hits", 3, &[("b", "2"), ("a", "1")]);
        metrics::counter_add("hits", 7, &[("a", "other")]);
        assert_eq!(counter("hits", &[("a", "1"), ("b", "2")]), 5);
        metrics::histogram_observe("ms", 1.5, &[]);
        assert_eq!(observations("ms", &[]), vec![1.5]);
    }

    #[test]
    fn callouts_fail_until_the_test_answers_them() {
        let send = || callout::send("api", "GET", "/x", &[], b"", Duration::from_secs(1));
        assert!(matches!(send(), Err(callout::Error::Denied(_))));
        on_callout(|req| {
            // The host is usable from inside the answer.
            crate::log::info(format!("callout to {}", req.target));
            Ok(callout::Response {
                status: 200,
                headers: vec![],
                body: req.path.as_bytes().to_vec(),
            })
        });
        assert_eq!(send().unwrap().body, b"/x");
        assert_eq!(logs(), vec![(Level::Info, "callout to api".to_string())]);
    }

    #[test]
    fn built_requests_carry_the_message_the_gateway_would() {
        let r = request("resources/read")
            .uri("file:///a")
            .era(Era::Modern)
            .id(Some(json!("x")))
            .header("X-Tenant", "acme")
            .build();
        assert_eq!(r.target(), Some("file:///a"));
        assert_eq!(r.tool(), None);
        assert_eq!(r.header("x-tenant").as_deref(), Some("acme"));
        let m = r.message_value();
        assert_eq!(m["params"]["uri"], "file:///a");
        assert_eq!(m["id"], "x");
        assert_eq!(
            m["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        let note = request("notifications/initialized").id(None).build();
        assert_eq!(note.id(), None);
        assert!(note.message_value().get("id").is_none());
        let answer = response(&r, json!({"ok": true}));
        assert_eq!(answer.result(), Some(&json!({"ok": true})));
        assert_eq!(answer.request().target(), Some("file:///a"));
        assert_eq!(
            serde_json::from_str::<Value>(answer.message()).unwrap()["id"],
            "x"
        );
    }
}
