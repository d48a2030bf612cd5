//! Hot reload: the config file read and validated again, its plugins loaded (unchanged ones
//! kept), a new [`Generation`] built beside the running one and swapped in atomically.
//! Requests and streams already under way finish on the generation they started on; sessions,
//! rate-limit buckets (of unchanged limits) and upstream health carry over. A config that fails
//! validation, or whose plugins fail to load, is refused and the running one keeps serving.
//!
//! Triggers: SIGHUP and `server.watch_config` (in `main`), `POST /admin/reload`.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;

use super::gateway::{Gateway, Generation};
use crate::config::Config;
use crate::plugins::PluginChanges;

/// Where the running config came from: what a reload reads again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// `--port` given on the command line, applied to every config read.
    pub port: Option<u16>,
}

/// The outcome of one reload, as logged, returned by `POST /admin/reload` and kept for the
/// admin API and the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// `applied` or `refused`.
    pub result: &'static str,
    /// What asked for it: `signal`, `admin`, `watch`.
    pub trigger: String,
    pub at_unix_ms: u64,
    /// The generation serving new requests afterwards.
    pub generation: u64,
    /// Why it was refused: every error, as `mcpgate validate` prints them.
    pub errors: Vec<String>,
    /// Changed keys that only a restart applies (they keep their running values).
    pub restart_required: Vec<String>,
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    pub plugins: PluginChanges,
}

/// The reload machinery a gateway carries: its source, one reload at a time, the last outcome,
/// `mcpgate_config_reloads_total{result}` and `mcpgate_config_generation`.
pub struct Reloads {
    source: OnceLock<ConfigSource>,
    one_at_a_time: tokio::sync::Mutex<()>,
    last: Mutex<Option<ReloadReport>>,
    total: IntCounterVec,
    generation: IntGauge,
}

impl std::fmt::Debug for Reloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloads")
            .field("source", &self.source.get())
            .finish_non_exhaustive()
    }
}

impl Reloads {
    pub(super) fn new(registry: &Registry) -> Reloads {
        let total = IntCounterVec::new(
            Opts::new(
                "mcpgate_config_reloads_total",
                "Config reloads by result (applied, refused)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let generation = IntGauge::new(
            "mcpgate_config_generation",
            "The config generation serving new requests (1 at start, one more per applied reload)",
        )
        .expect("valid metric");
        use crate::observability::metrics::register_shared;
        register_shared(registry, Box::new(total.clone()));
        register_shared(registry, Box::new(generation.clone()));
        for result in ["applied", "refused"] {
            total.with_label_values(&[result]);
        }
        generation.set(1);
        Reloads {
            source: OnceLock::new(),
            one_at_a_time: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
            total,
            generation,
        }
    }

    /// Where a reload reads the config from; set once, by `mcpgate start`.
    pub fn set_source(&self, source: ConfigSource) {
        let _ = self.source.set(source);
    }

    pub fn source(&self) -> Option<&ConfigSource> {
        self.source.get()
    }

    /// The last reload's outcome (`None` before the first).
    pub fn last(&self) -> Option<ReloadReport> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn unix_ms() -> u64 {
    crate::observability::unix_ms(SystemTime::now())
}

impl Gateway {
    /// Reads the config again and swaps it in, or refuses it (see the module docs). `trigger`
    /// names what asked, for the log and the report. One reload runs at a time; a second waits.
    pub async fn reload(&self, trigger: &str) -> ReloadReport {
        let _one = self.reloads.one_at_a_time.lock().await;
        let current = self.current();
        let mut report = ReloadReport {
            result: "refused",
            trigger: trigger.to_string(),
            at_unix_ms: unix_ms(),
            generation: current.number,
            errors: Vec::new(),
            restart_required: Vec::new(),
            routes_added: Vec::new(),
            routes_removed: Vec::new(),
            plugins: PluginChanges::default(),
        };
        match self.reloads.source.get() {
            None => report
                .errors
                .push("this gateway was not started from a config file: nothing to reload".into()),
            Some(source) => match self.try_reload(source, &current, &mut report).await {
                Ok((next, retired)) => {
                    report.result = "applied";
                    report.generation = next.number;
                    // Leases the new config does not keep go back to Redis.
                    if let Some(old) = &current.leases
                        && !next
                            .leases
                            .as_ref()
                            .is_some_and(|n| std::sync::Arc::ptr_eq(n, old))
                    {
                        let old = old.clone();
                        tokio::spawn(async move { old.sweep(true).await });
                    }
                    self.install(next);
                    // Only now: requests starting from here on use the new bridges.
                    retired.stop();
                }
                Err(errors) => report.errors = errors,
            },
        }
        self.record(&report);
        report
    }

    /// Builds the next generation from `source`, with the stdio bridges it replaced (still
    /// running), or says why not (every error).
    async fn try_reload(
        &self,
        source: &ConfigSource,
        current: &Generation,
        report: &mut ReloadReport,
    ) -> Result<(Generation, crate::stdio::Retired), Vec<String>> {
        let lines = |text: String| text.lines().map(str::to_string).collect::<Vec<_>>();
        let mut next = Config::load(&source.path).map_err(|e| lines(e.to_string()))?;
        if let Some(port) = source.port {
            next.server.port = port;
        }
        report.restart_required = carry_over(&current.config, &mut next);
        if next
            .rate_limit
            .as_ref()
            .is_some_and(|r| r.backend == crate::config::StateBackend::Redis)
            && current.plugins.deps().redis.is_none()
        {
            return Err(vec![
                "rate_limit.backend: redis needs the Redis connection, which this process did not open at start (add `redis:` and restart)".into(),
            ]);
        }
        let (plugins, changes) = current.plugins.reload(&next).await.map_err(|mut e| {
            e.source = source.path.display().to_string();
            lines(e.to_string())
        })?;
        report.plugins = changes;
        let mut retired = self
            .bridges
            .attach(&mut next)
            .map_err(|e| vec![format!("cannot start a stdio route's bridge: {e}")])?;
        retired.extend(
            self.federations
                .attach(&mut next, &self.client)
                .map_err(|e| vec![format!("cannot start a federated route's endpoint: {e}")])?,
        );
        let names = |c: &Config| -> Vec<String> {
            c.upstreams.iter().map(|u| u.name.to_string()).collect()
        };
        let (before, after) = (names(&current.config), names(&next));
        report.routes_added = after
            .iter()
            .filter(|n| !before.contains(n))
            .cloned()
            .collect();
        report.routes_removed = before
            .iter()
            .filter(|n| !after.contains(n))
            .cloned()
            .collect();
        Ok((
            Generation::build(current.number + 1, next, plugins, &self.obs, Some(current)),
            retired,
        ))
    }

    /// Logs a reload's outcome, counts it, keeps it for the admin API.
    fn record(&self, report: &ReloadReport) {
        self.reloads.total.with_label_values(&[report.result]).inc();
        self.reloads
            .generation
            .set(i64::try_from(report.generation).unwrap_or(i64::MAX));
        for key in &report.restart_required {
            tracing::warn!(trigger = %report.trigger, "config reload: {key}");
        }
        if report.result == "applied" {
            tracing::info!(
                trigger = %report.trigger,
                generation = report.generation,
                routes_added = ?report.routes_added,
                routes_removed = ?report.routes_removed,
                plugins_loaded = ?report.plugins.loaded,
                plugins_kept = ?report.plugins.kept,
                "config reloaded"
            );
        } else {
            for e in &report.errors {
                tracing::error!(trigger = %report.trigger, "config reload refused: {e}");
            }
            tracing::error!(
                trigger = %report.trigger,
                generation = report.generation,
                "config reload refused; generation {} keeps serving",
                report.generation
            );
        }
        *self
            .reloads
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report.clone());
    }
}

/// Keys a running process cannot change: the listener and its threads, the session key, the
/// process-wide resources (metrics registry, audit sink, tracer, Redis connection, wasm engine),
/// the admin listener. A changed one is reported (`<key>: changed; needs a restart`) and keeps its
/// running value in `next`, so that the effective config is what runs.
fn carry_over(running: &Config, next: &mut Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut keep = |key: &str, differs: bool| {
        if differs {
            changed.push(format!(
                "{key}: changed in the file; needs a restart (the running value is kept)"
            ));
        }
    };
    let (r, n) = (&running.server, &mut next.server);
    keep("server.bind", r.bind != n.bind);
    keep("server.port", r.port != n.port);
    keep("server.workers", r.workers != n.workers);
    keep(
        "server.max_connections",
        r.max_connections != n.max_connections,
    );
    keep(
        "server.header_timeout",
        r.header_timeout != n.header_timeout,
    );
    keep("server.write_timeout", r.write_timeout != n.write_timeout);
    n.bind = r.bind;
    n.port = r.port;
    n.workers = r.workers;
    n.max_connections = r.max_connections;
    n.header_timeout = r.header_timeout;
    n.write_timeout = r.write_timeout;
    // Whole sections the process built its resources from. Their runtime types hold compiled
    // values (regexes, keys), so they are compared in their full `Debug` form.
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    keep("sessions", differs(&running.sessions, &next.sessions));
    keep(
        "observability",
        differs(&running.observability, &next.observability),
    );
    keep("redis", differs(&running.redis, &next.redis));
    keep(
        "plugin_runtime",
        differs(&running.plugin_runtime, &next.plugin_runtime),
    );
    keep("admin", differs(&running.admin, &next.admin));
    next.sessions = running.sessions.clone();
    next.observability = running.observability.clone();
    next.redis = running.redis.clone();
    next.plugin_runtime = running.plugin_runtime.clone();
    next.admin = running.admin.clone();
    changed
}

#[cfg(test)]
mod tests {
    use super::carry_over;
    use crate::config::Config;

    fn parse(text: &str) -> Config {
        let env = |k: &str| (k == "T").then(|| "an-admin-token-of-some-length".to_string());
        Config::parse(text, "t.yaml", &env).unwrap()
    }

    #[test]
    fn keys_only_a_restart_applies_keep_their_running_values() {
        let running = parse(
            "server: {port: 8080, workers: 2}\nupstreams:\n  a: {url: http://127.0.0.1:1/mcp}\n",
        );
        let mut next = parse(
            "server: {port: 9090, workers: 4, max_body_bytes: 1000}\nsessions: {ttl: 5000}\n\
             admin: {token_env: T}\nupstreams:\n  a: {url: http://127.0.0.1:1/mcp}\n",
        );
        let changed = carry_over(&running, &mut next);
        let keys: Vec<&str> = changed
            .iter()
            .map(|c| c.split(':').next().unwrap())
            .collect();
        assert_eq!(keys, ["server.port", "server.workers", "sessions", "admin"]);
        assert_eq!(next.server.port, 8080);
        assert_eq!(next.server.workers, 2);
        assert_eq!(next.sessions.ttl, running.sessions.ttl);
        assert!(next.admin.is_none());
        // What a reload may change, changes.
        assert_eq!(next.server.max_body_bytes, 1000);
        // The same file twice: nothing to report.
        let mut same = parse(
            "server: {port: 8080, workers: 2}\nupstreams:\n  a: {url: http://127.0.0.1:1/mcp}\n",
        );
        assert!(carry_over(&running, &mut same).is_empty());
    }
}
