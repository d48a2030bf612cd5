//! The `mcpgate` command: parse the CLI, load and validate the config, bind, call
//! [`crate::run_workers`]. In the library so that the binary (`main.rs`, which picks the
//! allocator) and the benchmark's allocation-counting build run the same code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::Config;
use crate::deps::Deps;
use crate::plugins::Plugins;
use base64::Engine as _;
use clap::{Parser, Subcommand};

/// mcpgate — a gateway for Model Context Protocol (MCP) servers.
///
/// Put mcpgate between AI clients and MCP servers that speak Streamable HTTP. Each server in the
/// config's `upstreams:` section is served at http://<bind>:<port>/servers/<name>/mcp.
///
/// Quick start, in the mcpgate repository (config/mcpgate.yaml, the default config, runs as is):
///   mcpgate validate
///   mcpgate list-servers
///   mcpgate start
///
/// config/mcpgate.example.yaml documents every key. A config file written for MCPGate (the
/// TypeScript gateway) works unchanged, with the same commands.
#[derive(Parser)]
#[command(name = "mcpgate", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway and serve until Ctrl-C / SIGTERM (then drain in-flight requests).
    Start {
        /// Config file (YAML). See config/mcpgate.example.yaml for every key.
        #[arg(long, short, default_value = crate::config::DEFAULT_PATH, env = "MCPGATE_CONFIG")]
        config: PathBuf,
        /// Override `server.port` (0 picks a free port and prints it).
        #[arg(long)]
        port: Option<u16>,
        /// Log format: `text` for people, `json` for log pipelines.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Check a config file and report every error (key path and line); exit 1 if any.
    Validate {
        #[arg(long, short, default_value = crate::config::DEFAULT_PATH, env = "MCPGATE_CONFIG")]
        config: PathBuf,
        /// Also ask the members of every federated route for their tool and prompt names
        /// (starting stdio members for the while): names two members would both serve after
        /// prefixing are errors; a member that cannot be asked is a warning.
        #[arg(long)]
        members: bool,
    },
    /// List the configured upstream servers and the routes they are served at.
    ListServers {
        #[arg(long, short, default_value = crate::config::DEFAULT_PATH, env = "MCPGATE_CONFIG")]
        config: PathBuf,
    },
    /// Print a fresh random session key (for `sessions.key` / MCPGATE_SESSION_KEY).
    GenKey,
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::FAILURE
    })
}

/// Loads the config's plugins (compile, import check, `init`), reporting errors like config ones.
/// `validate` loads them with the default deps (nothing connects anywhere); `start` with what the
/// config names (the Redis-backed kv).
async fn load_plugins(
    path: &std::path::Path,
    cfg: &Config,
    deps: Deps,
) -> Result<Plugins, ExitCode> {
    Plugins::load(cfg, deps).await.map_err(|mut errors| {
        errors.source = path.display().to_string();
        eprint!("{errors}");
        ExitCode::FAILURE
    })
}

/// The control runtime: config and plugin loading, signals, background sweeps, exporters, the
/// Redis connection. Requests are served on `server.workers` threads of their own
/// ([`crate::run_workers`]), so one thread is enough here.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Runs the command line of `std::env::args`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config, members } => {
            let checked = load(&config).and_then(|cfg| {
                let rt = runtime()?;
                // The init snapshot only serves `start` (a failed one falls back, with a
                // warning): validating skips its two extra compiles.
                let mut checked = cfg.clone();
                for spec in &mut checked.plugins {
                    spec.init_snapshot = false;
                }
                rt.block_on(load_plugins(&config, &checked, Deps::default()))?;
                if members {
                    rt.block_on(check_members(&config, cfg.clone()))?;
                }
                Ok(cfg)
            });
            match checked {
                Ok(cfg) => {
                    let plural = |n: usize| if n == 1 { "" } else { "s" };
                    let federated = cfg
                        .upstreams
                        .iter()
                        .filter(|u| u.federation.is_some())
                        .count();
                    let checked = if members && federated > 0 {
                        format!(
                            "; the members of {federated} federated route{} asked for their names",
                            plural(federated)
                        )
                    } else {
                        String::new()
                    };
                    println!(
                        "{}: OK ({} upstream{}, {} plugin{}{checked})",
                        config.display(),
                        cfg.upstreams.len(),
                        plural(cfg.upstreams.len()),
                        cfg.plugins.len(),
                        plural(cfg.plugins.len()),
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::ListServers { config } => match load(&config) {
            Ok(cfg) => {
                let base = format!("http://{}:{}", cfg.server.bind, cfg.server.port);
                for u in &cfg.upstreams {
                    let auth = match &u.credential {
                        Some((name, _)) => format!("sends {name}"),
                        None => "no upstream credentials".to_string(),
                    };
                    let stages: Vec<&str> = u
                        .pipeline
                        .as_ref()
                        .unwrap_or(&cfg.pipeline)
                        .iter()
                        .map(|s| s.as_str())
                        .collect();
                    let stages = if stages.is_empty() {
                        "none".to_string()
                    } else {
                        stages.join(" → ")
                    };
                    let target = match &u.stdio {
                        Some(s) => format!("stdio: {} {}", s.child.command, s.child.args.join(" ")),
                        None => crate::config::display_url(&u.url),
                    };
                    println!(
                        "{:<20} {base}/servers/{}/mcp -> {target}  (timeout {}ms, {auth}, stages: {stages})",
                        u.name,
                        u.name,
                        u.timeout.as_millis()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::GenKey => {
            let key: [u8; 32] = rand::random();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Start {
            config,
            port,
            log_format,
        } => {
            let mut cfg = match load(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            if let Some(p) = port {
                cfg.server.port = p;
            }
            match runtime() {
                Ok(rt) => rt.block_on(start(config, cfg, port, &log_format)),
                Err(code) => code,
            }
        }
    }
}

/// `validate --members`: every federated route's members asked for their catalogs (stdio
/// members started, then stopped), collisions reported like config errors, at the route's
/// `members` key.
async fn check_members(path: &std::path::Path, mut cfg: Config) -> Result<(), ExitCode> {
    use crate::config::yaml::{ConfigError, ConfigErrors};
    if cfg.upstreams.iter().all(|u| u.federation.is_none()) {
        return Ok(());
    }
    let client = Deps::default().client;
    let bridges = crate::stdio::Bridges::default();
    let federations = crate::federation::Federations::unchecked();
    let attached = bridges.attach(&mut cfg).and_then(|retired| {
        retired.stop();
        federations.attach(&mut cfg, &client)
    });
    let checks = match attached {
        Ok(retired) => {
            retired.stop();
            federations.catalog_checks().await
        }
        Err(e) => {
            eprintln!(
                "{}: cannot start the members' endpoints: {e}",
                path.display()
            );
            bridges.stop_all();
            federations.stop_all();
            return Err(ExitCode::FAILURE);
        }
    };
    bridges.stop_all();
    federations.stop_all();
    let root = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| crate::config::yaml::parse(&text).ok());
    let mut errors = Vec::new();
    for (route, check) in checks {
        let key = format!("upstreams.{route}.members");
        let line = root
            .as_ref()
            .and_then(|r| crate::config::yaml::line_of(r, &key));
        for (member, why) in &check.unasked {
            let at = line.map(|l| format!(":{l}")).unwrap_or_default();
            eprintln!(
                "{}{at}: warning: {key}: member {member} could not be asked for its names ({why}); they were not checked",
                path.display()
            );
        }
        errors.extend(check.collisions.iter().map(|c| ConfigError {
            path: key.clone(),
            line,
            message: c.to_string(),
        }));
    }
    if errors.is_empty() {
        return Ok(());
    }
    eprint!(
        "{}",
        ConfigErrors {
            source: path.display().to_string(),
            errors,
            missing_env: Vec::new(),
        }
    );
    Err(ExitCode::FAILURE)
}

async fn start(path: PathBuf, cfg: Config, port: Option<u16>, log_format: &str) -> ExitCode {
    let tracer =
        match crate::observability::trace::init(log_format, cfg.observability.tracing.as_ref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
    let code = serve(path, cfg, port).await;
    if let Some(t) = tracer {
        // Export what is still batched; the exporter needs this runtime, so block elsewhere.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    code
}

/// The admin listener (`admin:`), bound before anything is served so a taken port fails the
/// start with the key to change.
async fn bind_admin(cfg: &Config) -> Result<Option<tokio::net::TcpListener>, ExitCode> {
    let Some(admin) = &cfg.admin else {
        return Ok(None);
    };
    let addr = std::net::SocketAddr::new(admin.bind, admin.port);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            eprintln!(
                "cannot listen on {addr} for the admin API: {e} (change admin.port or admin.bind)"
            );
            Err(ExitCode::FAILURE)
        }
    }
}

/// Reloads on SIGHUP, and on file changes while `server.watch_config` is on.
fn spawn_reload_triggers(gateway: &Arc<crate::Gateway>) {
    tokio::spawn(crate::server::watch::watch_files(gateway.clone()));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let gw = gateway.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        gw.reload("signal").await;
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "no SIGHUP handler: reload through the admin API"),
        }
    }
}

async fn serve(path: PathBuf, cfg: Config, port: Option<u16>) -> ExitCode {
    let deps = match Deps::for_config(&cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let plugins = match load_plugins(&path, &cfg, deps).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let addr = std::net::SocketAddr::new(cfg.server.bind, cfg.server.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e} (change server.port or server.bind)");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let admin = match bind_admin(&cfg).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let gateway = match crate::Gateway::build(cfg, &plugins) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    gateway.reloads.set_source(crate::server::ConfigSource {
        path: path.clone(),
        port,
    });
    let config = gateway.config();
    let scheme = config.server.scheme();
    for u in &config.upstreams {
        tracing::info!(upstream = %u.name, route = %format!("{scheme}://{local}/servers/{}/mcp", u.name), target = %crate::config::display_url(&u.url), "route");
    }
    let shutdown = shutdown_signal();
    spawn_reload_triggers(&gateway);
    // A line for scripts (tests, the demo) that start on port 0 and need the port.
    println!("mcpgate listening on {scheme}://{local}");
    if let Some(m) = &gateway.obs.metrics_path {
        tracing::info!(url = %format!("{scheme}://{local}{m}"), "metrics");
    }
    if let Some(listener) = admin {
        let at = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        println!("mcpgate admin listening on http://{at}");
        let gw = gateway.clone();
        let stop = gateway.shutdown_token();
        tokio::spawn(crate::admin::serve(listener, gw, stop.cancelled_owned()));
    }
    let workers = config.server.workers;
    let result = crate::run_workers(listener, gateway.clone(), workers, shutdown).await;
    // The stdio servers end with the gateway (after the drain: their last calls are answered).
    gateway.bridges.stop_all();
    gateway.federations.stop_all();
    if let Some(audit) = &gateway.obs.audit {
        let audit_flushed = std::time::Duration::from_secs(5);
        let _ = tokio::task::block_in_place(|| audit.flush(audit_flushed));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C / SIGTERM. The handlers are installed when this is called, not when the future is first
/// polled: a signal that arrives as soon as the "listening" line is out (a supervisor stopping the
/// gateway at once) must start a drain, not kill the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
