use super::*;

/// A minimal upstreams section, appended to a section under test.
const ROUTE: &str = "upstreams:\n  a:\n    url: http://x/mcp\n";

pub(crate) fn env(name: &str) -> Option<String> {
    match name {
        "GH_TOKEN" => Some("ghp_secret".into()),
        "API_VALUE" => Some("v-123".into()),
        "PORT" => Some("9090".into()),
        "UPSTREAM_HOST" => Some("127.0.0.1:3001".into()),
        "EMPTY" => Some(String::new()),
        "BLANK" => Some("  \t ".into()),
        "WITH_NEWLINE" => Some("eng-key-1\n".into()),
        "WITH_BELL" => Some("eng\u{7}key".into()),
        "ENG_API_KEY" => Some("eng-key-1".into()),
        "CONTRACTOR_API_KEY" => Some("contractor-key-2".into()),
        "GITHUB_MCP_TOKEN" => Some("ghp_migrated".into()),
        "DB_MCP_KEY" => Some("db-key".into()),
        "KEY_HASH" => Some(format!("sha256:{}", "ab".repeat(32))),
        _ => None,
    }
}

pub(crate) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, "test.yaml", &env)
}

/// (path, line) of every error, for table assertions.
pub(crate) fn errors(text: &str) -> Vec<(String, Option<usize>, String)> {
    parse(text)
        .unwrap_err()
        .errors
        .into_iter()
        .map(|e| (e.path, e.line, e.message))
        .collect()
}

/// Asserts that `text` has an error at `path`, with a line, whose message contains `needle`;
/// returns every error.
pub(crate) fn assert_error_at(
    text: &str,
    path: &str,
    needle: &str,
) -> Vec<(String, Option<usize>, String)> {
    let got = errors(text);
    assert!(
        got.iter()
            .any(|(p, line, m)| p == path && line.is_some() && m.contains(needle)),
        "{text:?}: want {path} ~ {needle:?} with a line, got {got:#?}"
    );
    got
}

/// [`assert_error_at`] for each `(section, path, needle)`, the section followed by [`ROUTE`].
pub(crate) fn assert_errors_at(cases: &[(&str, &str, &str)]) {
    for (section, path, needle) in cases {
        assert_error_at(&format!("{section}{ROUTE}"), path, needle);
    }
}

#[test]
fn a_full_config_compiles() {
    let cfg = parse(
        "server:\n  port: ${PORT}\n  bind: 0.0.0.0\n  max_body_bytes: 1024\n  workers: 3\n  allowed_origins: [\"https://app.example.com\", \"http://localhost:*\"]\n\
         sessions:\n  key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n  ttl: 1000\n\
         upstreams:\n  github:\n    url: http://${UPSTREAM_HOST}/mcp\n    timeout: 5000\n    auth: {type: bearer, token_env: GH_TOKEN}\n\
         \x20 other:\n    url: https://example.com/mcp?x=1\n    stream_idle_timeout: 0\n    auth:\n      type: header\n      header: X-API-Key\n      value_env: API_VALUE\n",
    )
    .unwrap();
    assert_eq!(cfg.server.port, 9090);
    assert_eq!(cfg.server.bind.to_string(), "0.0.0.0");
    assert_eq!(cfg.server.max_body_bytes, 1024);
    assert_eq!(cfg.server.workers, 3);
    assert!(cfg.server.allowed_origins.allows("https://app.example.com"));
    assert!(cfg.server.allowed_origins.allows("http://localhost:5173"));
    assert!(!cfg.server.allowed_origins.allows("https://evil.example"));
    assert_eq!(cfg.sessions.key, Some([0u8; 32]));
    assert_eq!(cfg.sessions.ttl, Duration::from_millis(1000));
    let gh = cfg.upstream("github").unwrap();
    assert_eq!(gh.url.to_string(), "http://127.0.0.1:3001/mcp");
    assert_eq!(gh.timeout, Duration::from_millis(5000));
    let (name, value) = gh.credential.as_ref().unwrap();
    assert_eq!(name, "authorization");
    assert_eq!(value, "Bearer ghp_secret");
    let other = cfg.upstream("other").unwrap();
    assert_eq!(other.stream_idle_timeout, None);
    assert_eq!(other.credential.as_ref().unwrap().0, "x-api-key");
    assert!(cfg.upstream("missing").is_none());
}

#[test]
fn defaults() {
    let cfg = parse("upstreams:\n  a:\n    url: http://127.0.0.1:1/mcp\n").unwrap();
    assert_eq!(cfg.server.port, DEFAULT_PORT);
    assert_eq!(cfg.server.bind.to_string(), "127.0.0.1");
    assert_eq!(cfg.server.max_body_bytes, 4 * 1024 * 1024);
    assert_eq!(
        cfg.server.workers,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    assert!(cfg.server.allowed_origins.allows("http://127.0.0.1:3000"));
    assert!(
        !cfg.server
            .allowed_origins
            .allows("http://127.0.0.1.evil.com:3000")
    );
    assert!(!cfg.server.allowed_origins.allows("null"));
    let a = cfg.upstream("a").unwrap();
    assert_eq!(
        a.timeout,
        Duration::from_millis(DEFAULT_UPSTREAM_TIMEOUT_MS)
    );
    assert_eq!(
        a.stream_idle_timeout,
        Some(Duration::from_millis(DEFAULT_STREAM_IDLE_TIMEOUT_MS))
    );
    assert!(cfg.sessions.key.is_none());
    let empty =
        parse("sessions:\n  key: \"\"\nupstreams:\n  a:\n    url: http://127.0.0.1:1/mcp\n")
            .unwrap();
    assert!(empty.sessions.key.is_none(), "an empty key means unset");
}

#[test]
fn every_error_is_reported_at_once_with_path_and_line() {
    let text = "\
server:
  port: eighty
  colour: blue
upstreams:
  github:
    url: not a url
    timeout: -5
  files:
    url: ftp://example.com/mcp
    auth: {type: bearer, token_env: NOT_SET}
  extra:
    timeout: 10
    auth:
      type: magic
  tokens:
    url: http://127.0.0.1:1/mcp
    secret: ${MISSING_VAR}
";
    let got = errors(text);
    let want: &[(&str, usize, &str)] = &[
        ("server.port", 2, "whole number"),
        ("server.colour", 3, "unknown key `colour`"),
        ("upstreams.github.url", 6, "not a valid URL"),
        ("upstreams.github.timeout", 7, "whole number"),
        ("upstreams.files.url", 9, "http or https"),
        ("upstreams.files.auth.token_env", 10, "`NOT_SET` is not set"),
        ("upstreams.extra.url", 11, "required"),
        ("upstreams.extra.auth.type", 14, "unknown auth type `magic`"),
        ("upstreams.tokens.secret", 17, "MISSING_VAR"),
    ];
    for (path, line, needle) in want {
        assert!(
            got.iter()
                .any(|(p, l, m)| p == path && *l == Some(*line) && m.contains(needle)),
            "missing {path} (line {line}, {needle:?}) in {got:#?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

#[test]
fn single_errors() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "upstreams", "at least one upstream"),
        ("upstreams: [a, b]\n", "upstreams", ""),
        (
            "upstreams:\n  a:\n    url: http://x/mcp\n    auth: {type: header, value_env: API_VALUE}\n",
            "upstreams.a.auth.header",
            "required",
        ),
        (
            "upstreams:\n  a:\n    url: http://x/mcp\n    auth: {type: header, header: \"bad header\", value_env: API_VALUE}\n",
            "upstreams.a.auth.header",
            "not a valid header name",
        ),
        (
            "upstreams:\n  a:\n    url: http://x/mcp\n    auth: {type: bearer}\n",
            "upstreams.a.auth.token_env",
            "required",
        ),
        (
            "upstreams:\n  a:\n    url: http://x/mcp\n    auth: {type: bearer, token_env: GH_TOKEN, header: X}\n",
            "upstreams.a.auth.header",
            "does not apply",
        ),
        (
            "upstreams:\n  a:\n    url: http://user:pw@x/mcp\n",
            "upstreams.a.url",
            "credentials",
        ),
        (
            "upstreams:\n  a.b:\n    url: http://x/mcp\n",
            "upstreams.a.b",
            "may only use",
        ),
        (
            "upstreams:\n  a:\n    url: http://x/mcp\n    timeout: 0\n",
            "upstreams.a.timeout",
            "greater than 0",
        ),
        (
            "server:\n  bind: somewhere\nupstreams:\n  a:\n    url: http://x/mcp\n",
            "server.bind",
            "not an IP address",
        ),
        (
            "server:\n  allowed_origins: [\"https://a.com/path\"]\nupstreams:\n  a:\n    url: http://x/mcp\n",
            "server.allowed_origins",
            "not an origin",
        ),
        (
            "sessions:\n  key: c2hvcnQ=\nupstreams:\n  a:\n    url: http://x/mcp\n",
            "sessions.key",
            "exactly 32 bytes",
        ),
        (
            "server:\n  port: 70000\nupstreams:\n  a:\n    url: http://x/mcp\n",
            "server.port",
            "",
        ),
        (
            "server:\n  workers: 0\nupstreams:\n  a:\n    url: http://x/mcp\n",
            "server.workers",
            "1 to 1024",
        ),
        (
            "server:\n  workers: 5000\nupstreams:\n  a:\n    url: http://x/mcp\n",
            "server.workers",
            "out of range",
        ),
        (
            "upstreams:\n  a:\n    url: http://x/mcp\n  a:\n    url: http://y/mcp\n",
            "",
            "duplicate",
        ),
        ("upstreams:\n  a: [\n", "", "not valid YAML"),
    ];
    for (text, path, needle) in cases {
        let got = errors(text);
        assert!(
            got.iter()
                .any(|(p, _, m)| p == path && m.to_lowercase().contains(&needle.to_lowercase())),
            "{text:?}: want {path} ~ {needle:?}, got {got:#?}"
        );
    }
}

/// Found by fuzzing (fuzz/fuzz_targets/config.rs): an error at the end of the text was placed on
/// a line after it, and lone CRs end lines for YAML as for editors.
#[test]
fn yaml_errors_name_a_line_of_the_text() {
    for (text, line) in [
        ("!", 1),
        ("\r\r)\n", 3),
        ("upstreams:\n  a: [\n", 3),
        ("a: 1\r\n!", 2),
        ("\t\0\0", 1),
    ] {
        let err = parse(text).unwrap_err();
        let lines: Vec<_> = err.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(line)], "{text:?}: {err}");
    }
}

/// A key with brackets in it, quoted in an error's path: finding its line read `{][` as an
/// index and cut the path's text backwards, a panic (found by the config fuzz target).
#[test]
fn keys_with_brackets_are_named_without_a_panic() {
    let text = "${ {][ {\"{][ {{][ {][ {\"{][{ {][ {{]){ {][ {\"{][[{ {][ {{]][ {{]){ {][ {\"{][{ {][ {{ {][ {])::";
    let err = parse(text).unwrap_err();
    assert!(err.errors.iter().all(|e| e.line == Some(1)), "{err}");
    assert!(err.to_string().contains("unknown key"), "{err}");
    // A route name with brackets: refused by name, no panic (its key path is ambiguous text,
    // so the error may name no line, never a wrong one).
    let err = parse("upstreams:\n  \"a]x[1]\": {url: nope}\n").unwrap_err();
    assert!(err.to_string().contains("may only use letters"), "{err}");
    assert!(
        err.errors.iter().all(|e| e.line.is_none_or(|l| l == 2)),
        "{err}"
    );
}

#[test]
fn display_names_file_line_and_key() {
    let err = parse("upstreams:\n  a:\n    url: nope\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("test.yaml: 1 error"), "{text}");
    assert!(
        text.contains("test.yaml:3: upstreams.a.url: `nope`"),
        "{text}"
    );
}

#[test]
fn redis_backed_sections_compile() {
    use crate::config::{OnError, StateBackend};
    let cfg = Config::parse(
        "redis:\n  url: redis://:pw@cache.internal:6380/2\n  key_prefix: \"prod:\"\n  timeout: 100\n\
         rate_limit:\n  backend: redis\n  per_client: {capacity: 10, refill_rate: 1}\n\
         plugin_runtime:\n  kv: {backend: redis, on_redis_error: fail_open}\n\
         upstreams:\n  a:\n    url: http://x/mcp\n",
        "t.yaml",
        &env,
    )
    .unwrap();
    let redis = cfg.redis.as_ref().unwrap();
    assert_eq!(redis.key_prefix, "prod:");
    assert_eq!(redis.timeout, Duration::from_millis(100));
    assert_eq!(redis.connect_timeout, Duration::from_millis(1000));
    assert!(
        !format!("{cfg:?}").contains(":pw@"),
        "the password is not in Debug output"
    );
    let rl = cfg.rate_limit.as_ref().unwrap();
    assert_eq!(rl.backend, StateBackend::Redis);
    assert_eq!(
        rl.on_redis_error,
        OnError::FailOpen,
        "rate limits fail open by default"
    );
    assert_eq!(cfg.plugin_runtime.kv.backend, StateBackend::Redis);
    assert_eq!(cfg.plugin_runtime.kv.on_redis_error, OnError::FailOpen);
    let memory = Config::parse(
        "rate_limit:\n  per_client: {capacity: 10, refill_rate: 1}\nupstreams:\n  a:\n    url: http://x/mcp\n",
        "t.yaml",
        &env,
    )
    .unwrap();
    assert_eq!(memory.rate_limit.unwrap().backend, StateBackend::Memory);
    assert_eq!(memory.plugin_runtime.kv.backend, StateBackend::Memory);
    assert!(memory.redis.is_none());
}

#[test]
fn stage_sections_compile() {
    let cfg = Config::parse(
        "auth:\n  type: api-key\n  keys:\n    - {id: alice, key_env: GH_TOKEN}\n    - {id: bob, key: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"}\n\
         rate_limit:\n  per_client: {capacity: 10, refill_rate: 1}\n  tools:\n    delete_*: {capacity: 1, refill_rate: 0.1}\n    \"*\": {capacity: 5, refill_rate: 1}\n\
         policy:\n  default: deny\n  rules:\n    - {tools: [\"read_*\"], decision: allow}\n\
         upstreams:\n  a:\n    url: http://x/mcp\n  b:\n    url: http://y/mcp\n    pipeline: [policy]\n",
        "t.yaml",
        &env,
    )
    .unwrap();
    assert_eq!(
        cfg.pipeline,
        vec![StageName::Auth, StageName::RateLimit, StageName::Policy],
        "default order"
    );
    assert_eq!(
        cfg.upstream("b").unwrap().pipeline,
        Some(vec![StageName::Policy])
    );
    let rl = cfg.rate_limit.unwrap();
    // Tool overrides keep the file's order: the first match wins.
    let names: Vec<&str> = rl
        .per_tool
        .overrides
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(names, vec!["delete_*", "*"]);
    assert_eq!(rl.per_tool.for_name("delete_repo").unwrap().capacity, 1.0);
    assert_eq!(rl.per_tool.for_name("search").unwrap().capacity, 5.0);
    match cfg.auth.unwrap() {
        crate::stages::auth::AuthConfig::ApiKey { header, keys } => {
            assert_eq!(header, "x-api-key");
            assert_eq!(keys.len(), 2);
        }
        other => panic!("{other:?}"),
    }

    let jwt = Config::parse(
        "server:\n  public_url: https://mcp.example.com/\nauth:\n  type: jwt\n  jwks_uri: https://idp.example.com/jwks\n  issuer: https://idp.example.com\n  audience: [a, b]\n  algorithms: [RS256, EdDSA]\n  scopes: [mcp]\nupstreams:\n  a:\n    url: http://x/mcp\n",
        "t.yaml",
        &env,
    )
    .unwrap();
    assert_eq!(
        jwt.server.public_url.as_deref(),
        Some("https://mcp.example.com")
    );
    let j = jwt.auth.as_ref().unwrap().jwt().unwrap();
    assert_eq!(j.audience, vec!["a", "b"]);
    assert_eq!(
        j.authorization_servers,
        vec!["https://idp.example.com"],
        "defaults to the issuer"
    );
    assert_eq!(j.client_id_claim, "sub");
}

/// Each mistake in the pipeline, server, redis and plugin_runtime sections is reported at its key,
/// with a line (each stage's own section: in `stages/<stage>/config.rs`).
#[test]
fn section_errors() {
    assert_errors_at(&[
        ("pipeline: [auth]\n", "pipeline[0]", "not configured"),
        (
            "policy: {}\npipeline: [policy, policy]\n",
            "pipeline[1]",
            "listed twice",
        ),
        (
            "policy: {}\npipeline: [firewall]\n",
            "pipeline[0]",
            "unknown stage",
        ),
        (
            "server:\n  public_url: not-a-url\n",
            "server.public_url",
            "not an http(s) URL",
        ),
        ("redis: {}\n", "redis.url", "required"),
        ("redis:\n  url: rediss://h:6380\n", "redis.url", "TLS"),
        ("redis:\n  url: http://h\n", "redis.url", "scheme `http`"),
        (
            "redis:\n  url: redis://h\n  timeout: 0\n",
            "redis.timeout",
            "between 1 and 60000",
        ),
        (
            "plugin_runtime:\n  kv: {backend: redis}\n",
            "plugin_runtime.kv.backend",
            "needs the `redis:` section",
        ),
        (
            "plugin_runtime:\n  kv: {backend: disk}\n",
            "plugin_runtime.kv.backend",
            "expected `memory` or `redis`",
        ),
        (
            "plugin_runtime:\n  kv: {on_redis_error: fail_open}\n",
            "plugin_runtime.kv.on_redis_error",
            "only applies to `backend: redis`",
        ),
    ]);
}

#[test]
fn observability_section() {
    let up = "upstreams:\n  u:\n    url: http://127.0.0.1:1/mcp\n";
    // Absent: everything off. Present: on unless `enabled: false`, with defaults.
    let off = parse(up).unwrap().observability;
    assert!(off.metrics.is_none() && off.audit.is_none() && off.tracing.is_none());
    let on = parse(&format!(
        "{up}observability:\n  metrics: {{}}\n  audit: {{sink: file, path: /tmp/a.jsonl, log_bodies: true}}\n  tracing:\n    otlp_endpoint: http://127.0.0.1:4318/v1/traces\n    sample_ratio: 0.25\n"
    ))
    .unwrap()
    .observability;
    let m = on.metrics.unwrap();
    assert_eq!((m.path.as_str(), m.max_unlisted_tools), ("/metrics", 20));
    let a = on.audit.unwrap();
    assert_eq!(a.sink, AuditSink::File("/tmp/a.jsonl".into()));
    assert!(a.log_bodies);
    let t = on.tracing.unwrap();
    assert_eq!(t.service_name, "mcpgate");
    assert_eq!(t.sample_ratio, 0.25);
    let disabled = parse(&format!(
        "{up}observability:\n  metrics: {{enabled: false}}\n"
    ))
    .unwrap();
    assert!(disabled.observability.metrics.is_none());

    // Every mistake at once, each at its key and line.
    let got = errors(&format!(
        "{up}observability:\n  metrics:\n    path: /servers/x\n  audit:\n    sink: file\n  tracing:\n    otlp_endpoint: collector:4318\n    sample_ratio: 2\n    colour: blue\n"
    ));
    let keys: Vec<(&str, Option<usize>)> = got.iter().map(|(p, l, _)| (p.as_str(), *l)).collect();
    assert_eq!(
        keys,
        [
            ("observability.metrics.path", Some(6)),
            ("observability.audit.path", Some(7)),
            ("observability.tracing.otlp_endpoint", Some(10)),
            ("observability.tracing.sample_ratio", Some(11)),
            ("observability.tracing.colour", Some(12)),
        ],
        "{got:#?}"
    );
    assert!(got[0].2.contains("collides"), "{}", got[0].2);
    assert!(got[1].2.contains("needs `path`"), "{}", got[1].2);
}

pub(crate) fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
}

pub(crate) fn api_keys(cfg: &Config) -> Vec<(String, [u8; 32])> {
    match cfg.auth.as_ref().unwrap() {
        crate::stages::auth::AuthConfig::ApiKey { keys, .. } => {
            keys.iter().map(|k| (k.id.to_string(), k.digest)).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// The config MCPGate's README teaches (tests/fixtures/mcpgate-readme.yaml, a verbatim copy of
/// ../shared/seed/mcpgate-readme.yaml), unchanged: every key means what it meant there.
#[test]
fn the_mcpgate_readme_config_runs_unchanged() {
    use crate::stages::policy::{Effect, Subject};
    use crate::stages::ratelimit::ClientScope;
    let text = include_str!("../../../../tests/fixtures/mcpgate-readme.yaml");
    let cfg = Config::parse(text, "mcpgate-readme.yaml", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.server.port, 3000);
    let github = cfg.upstream("github").unwrap();
    assert_eq!(
        github.timeout,
        Duration::from_millis(30_000),
        "ms, as in MCPGate"
    );
    let (name, value) = github.credential.as_ref().unwrap();
    assert_eq!(
        (name.as_str(), value.to_str().unwrap()),
        ("authorization", "Bearer ghp_migrated")
    );
    let postgres = cfg.upstream("postgres").unwrap();
    assert_eq!(postgres.timeout, Duration::from_millis(15_000));
    let (name, value) = postgres.credential.as_ref().unwrap();
    assert_eq!(
        (name.as_str(), value.to_str().unwrap()),
        ("x-db-key", "db-key")
    );

    // `key: "${VAR}"`: the keys came from the environment and are stored hashed.
    assert_eq!(
        api_keys(&cfg),
        [
            ("engineering".to_string(), sha256("eng-key-1")),
            ("contractors".to_string(), sha256("contractor-key-2")),
        ]
    );
    assert_eq!(cfg.auth.as_ref().unwrap().credential_header(), "x-api-key");

    // `defaults`: a bucket for each caller on each server.
    let rl = cfg.rate_limit.as_ref().unwrap();
    assert_eq!(rl.backend, StateBackend::Memory);
    assert_eq!(
        rl.per_client.for_name("engineering"),
        Some(crate::stages::ratelimit::Limit {
            capacity: 100.0,
            refill_rate: 10.0
        })
    );
    assert_eq!(rl.per_client_scope, ClientScope::Route);
    assert!(rl.per_server.default.is_none() && rl.per_tool.default.is_none());

    // First match wins; what no rule matches gets `default: allow`.
    let policy = cfg.policy.as_ref().unwrap();
    let judge = |client, server, tool| {
        policy
            .judge(&Subject {
                client,
                server,
                method: "tools/call",
                target: Some(tool),
            })
            .effect
    };
    assert_eq!(judge("engineering", "postgres", "query"), Effect::Allow);
    assert_eq!(judge("contractors", "github", "search_code"), Effect::Allow);
    assert_eq!(judge("contractors", "github", "get_issue"), Effect::Allow);
    assert_eq!(judge("contractors", "postgres", "query"), Effect::Deny);
    assert_eq!(
        judge("contractors", "postgres", "search_rows"),
        Effect::Deny
    );

    let obs = &cfg.observability;
    assert_eq!(obs.metrics.as_ref().unwrap().path, "/metrics");
    let audit = obs.audit.as_ref().unwrap();
    assert_eq!((&audit.sink, audit.log_bodies), (&AuditSink::Stdout, false));
}

/// The MCPGate README config without its environment: every variable it needs is named, with how
/// to set it, and nothing else is reported.
#[test]
fn the_mcpgate_readme_config_names_every_variable_it_needs() {
    let text = include_str!("../../../../tests/fixtures/mcpgate-readme.yaml");
    let errors = Config::parse(text, "mcpgate-readme.yaml", &|_| None).unwrap_err();
    let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "upstreams.github.auth.token_env",
            "upstreams.postgres.auth.value_env",
            "auth.keys[0].key",
            "auth.keys[1].key",
        ],
        "{errors}"
    );
    assert!(
        errors.to_string().contains(
            "export CONTRACTOR_API_KEY=... DB_MCP_KEY=... ENG_API_KEY=... GITHUB_MCP_TOKEN=..."
        ),
        "{errors}"
    );
}

/// The other examples of MCPGate's README, as written there: the minimal config, JWT, OIDC.
#[test]
fn the_other_mcpgate_readme_examples_keep_working() {
    let minimal = parse(
        "server:\n  port: 3000\nupstreams:\n  github:\n    url: \"https://your-github-mcp-server.example.com/mcp\"\n    timeout: 30000\n",
    )
    .unwrap();
    assert_eq!(minimal.server.port, 3000);
    let up = "upstreams:\n  github:\n    url: \"https://github-mcp.example.com/mcp\"\n";
    let jwt = parse(&format!(
        "{up}auth:\n  type: jwt\n  jwks_uri: \"https://auth.example.com/.well-known/jwks.json\"\n  issuer: \"https://auth.example.com\"\n  audience: \"mcpgate\"\n  algorithms: [\"RS256\"]\n  client_id_claim: sub\n"
    ))
    .unwrap();
    let j = jwt.auth.as_ref().unwrap().jwt().unwrap();
    assert_eq!(
        (j.audience.as_slice(), j.client_id_claim.as_str()),
        (&["mcpgate".to_string()][..], "sub")
    );
    let oidc = parse(&format!(
        "{up}auth:\n  type: oidc\n  issuer: \"https://accounts.google.com\"\n  audience: \"your-client-id\"\n  client_id_claim: sub\n"
    ))
    .unwrap();
    assert!(matches!(
        &oidc.auth.as_ref().unwrap().jwt().unwrap().source,
        crate::stages::auth::KeySource::Oidc(issuer) if issuer == "https://accounts.google.com"
    ));
}

#[test]
fn the_request_budget_fits_one_call_of_every_plugin() {
    let up = "upstreams:\n  a:\n    url: http://x/mcp\n";
    let plugin = "plugins:\n  slow:\n    file: x.wasm\n    timeout: 3000\n";
    let grown = parse(&format!("{up}{plugin}")).unwrap();
    assert_eq!(
        grown.plugin_runtime.request_budget,
        Duration::from_millis(6000),
        "the default grows to twice the longest timeout"
    );
    let plain = parse(up).unwrap();
    assert_eq!(
        plain.plugin_runtime.request_budget,
        Duration::from_millis(1000)
    );
    assert_error_at(
        &format!("{up}{plugin}plugin_runtime:\n  request_budget: 2000\n"),
        "plugin_runtime.request_budget",
        "shorter than plugins.slow.timeout (3000ms)",
    );
    assert_error_at(
        &format!("{up}plugin_runtime:\n  request_budget: 0\n"),
        "plugin_runtime.request_budget",
        "between 1 and 600000",
    );
}

#[test]
fn plugin_header_bytes_have_a_default_and_a_range() {
    let up = "upstreams:\n  a:\n    url: http://x/mcp\n";
    assert_eq!(parse(up).unwrap().plugin_runtime.max_header_bytes, 8192);
    let set = parse(&format!("{up}plugin_runtime:\n  max_header_bytes: 1024\n")).unwrap();
    assert_eq!(set.plugin_runtime.max_header_bytes, 1024);
    for bad in ["0", "65537"] {
        assert_error_at(
            &format!("{up}plugin_runtime:\n  max_header_bytes: {bad}\n"),
            "plugin_runtime.max_header_bytes",
            "between 1 and 65536",
        );
    }
}

#[test]
fn trusted_proxies_and_the_client_address_behind_them() {
    use crate::proxy::Peer;
    let cfg = parse(
        "server:\n  trusted_proxies: [10.0.0.0/8, \"fd00::/8\", 192.168.1.7]\nupstreams:\n  a:\n    url: http://x/mcp\n",
    )
    .unwrap();
    let trusted = &cfg.server.trusted_proxies;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    for (addr, want) in [
        ("10.1.2.3", true),
        ("11.0.0.1", false),
        ("192.168.1.7", true),
        ("192.168.1.8", false),
        ("fd12::1", true),
        ("fe80::1", false),
        ("::ffff:10.9.9.9", true),
    ] {
        assert_eq!(trusted.iter().any(|c| c.contains(ip(addr))), want, "{addr}");
    }
    assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));

    let headers = |xff: &str| {
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    };
    let via = |peer: &str| Peer::new(std::net::SocketAddr::new(ip(peer), 1), trusted);
    // An untrusted peer: its X-Forwarded-For is not believed.
    assert_eq!(
        via("8.8.8.8").client_ip(&headers("1.2.3.4"), trusted),
        ip("8.8.8.8")
    );
    // Behind trusted proxies: the nearest hop that is not one of them.
    assert_eq!(
        via("10.0.0.1").client_ip(&headers("6.6.6.6, 1.2.3.4, 10.0.0.9"), trusted),
        ip("1.2.3.4")
    );
    assert_eq!(
        via("10.0.0.1").client_ip(&headers("junk, 10.0.0.2"), trusted),
        ip("10.0.0.2")
    );
    assert_eq!(
        via("10.0.0.1").client_ip(&http::HeaderMap::new(), trusted),
        ip("10.0.0.1")
    );

    for (bad, needle) in [
        ("10.0.0.0/33", "prefix length"),
        ("proxy.local", "not an IP"),
    ] {
        assert_error_at(
            &format!(
                "server:\n  trusted_proxies: [\"{bad}\"]\nupstreams:\n  a:\n    url: http://x/mcp\n"
            ),
            "server.trusted_proxies[0]",
            needle,
        );
    }
}

#[test]
fn sse_keepalive_is_off_by_default_and_positive_when_set() {
    let route = "upstreams:\n  a:\n    url: http://x/mcp\n";
    assert_eq!(parse(route).unwrap().server.sse_keepalive, None);
    let on = parse(&format!("server:\n  sse_keepalive: 15000\n{route}")).unwrap();
    assert_eq!(on.server.sse_keepalive, Some(Duration::from_secs(15)));
    assert_error_at(
        &format!("server:\n  sse_keepalive: 0\n{route}"),
        "server.sse_keepalive",
        "greater than 0",
    );
}

#[test]
fn websocket_section_defaults_and_errors() {
    let ws = parse(ROUTE).unwrap().server.websocket;
    assert!(ws.enabled);
    // The bound on a message defaults to the bound on a POST's body.
    assert_eq!(ws.max_message_bytes, 4 * 1024 * 1024);
    assert_eq!(ws.idle_timeout, Duration::from_secs(600));
    assert_eq!(ws.ping_interval, Duration::from_secs(30));
    assert_eq!(ws.max_in_flight, 32);
    assert_eq!(ws.query_token, None);
    let set = parse(&format!(
        "server:\n  max_body_bytes: 1000\n  websocket:\n    enabled: false\n    query_token: access_token\n{ROUTE}"
    ))
    .unwrap()
    .server
    .websocket;
    assert!(!set.enabled);
    assert_eq!(set.max_message_bytes, 1000);
    assert_eq!(set.query_token.as_deref(), Some("access_token"));
    assert_errors_at(&[
        (
            "server:\n  websocket:\n    max_message_bytes: 0\n",
            "server.websocket.max_message_bytes",
            "at least 1",
        ),
        (
            "server:\n  websocket:\n    idle_timeout: 0\n",
            "server.websocket.idle_timeout",
            "greater than 0",
        ),
        (
            "server:\n  websocket:\n    ping_interval: 0\n",
            "server.websocket.ping_interval",
            "greater than 0",
        ),
        (
            "server:\n  websocket:\n    max_in_flight: 0\n",
            "server.websocket.max_in_flight",
            "at least 1",
        ),
        (
            "server:\n  websocket:\n    query_token: \"a b\"\n",
            "server.websocket.query_token",
            "not a query parameter name",
        ),
        (
            "server:\n  websocket:\n    pings: 3\n",
            "server.websocket.pings",
            "unknown",
        ),
    ]);
}

#[test]
fn federated_routes() {
    let cfg = parse(
        "upstreams:\n  github: {url: http://g/mcp}\n  jira: {url: http://j/mcp}\n  team:\n    members: [github, {name: jira, prefix: \"\"}]\n",
    )
    .unwrap();
    let team = cfg.upstream("team").unwrap();
    let f = team.federation.as_ref().unwrap();
    assert_eq!(f.members[0].name.as_ref(), "github");
    assert_eq!(f.members[0].prefix, "github_");
    assert_eq!(f.members[1].prefix, "");
    assert!(cfg.upstream("github").unwrap().federation.is_none());
    let custom = parse(
        "upstreams:\n  a: {url: http://a/mcp}\n  b: {url: http://b/mcp}\n  t: {members: [a, b], prefix: \"{member}.\"}\n",
    )
    .unwrap();
    assert_eq!(
        custom
            .upstream("t")
            .unwrap()
            .federation
            .as_ref()
            .unwrap()
            .members[1]
            .prefix,
        "b."
    );

    assert_eq!(f.catalog_ttl, None);
    let ttl =
        parse("upstreams:\n  a: {url: http://a/mcp}\n  t: {members: [a], catalog_ttl: 30000}\n")
            .unwrap();
    assert_eq!(
        ttl.upstream("t")
            .unwrap()
            .federation
            .as_ref()
            .unwrap()
            .catalog_ttl,
        Some(Duration::from_secs(30))
    );

    let base = "upstreams:\n  a: {url: http://a/mcp}\n  b: {url: http://b/mcp}\n";
    for (team, path, needle) in [
        (
            "  t: {members: [a, nope]}\n",
            "upstreams.t.members[1]",
            "no upstream is named `nope`",
        ),
        (
            "  t: {members: [a, t]}\n",
            "upstreams.t.members[1]",
            "its own member",
        ),
        (
            "  t: {members: [a]}\n  u: {members: [t]}\n",
            "upstreams.u.members[0]",
            "federated route itself",
        ),
        (
            "  t: {members: [a, a]}\n",
            "upstreams.t.members[1]",
            "listed twice",
        ),
        (
            "  t: {members: [a, b], prefix: \"x_\"}\n",
            "upstreams.t.members[1]",
            "both get the prefix `x_`",
        ),
        (
            "  t: {members: [a, b], prefix: \"{member} \"}\n",
            "upstreams.t.prefix",
            "may only use",
        ),
        (
            "  t: {members: [a, {name: b, prefix: \"b:\"}]}\n",
            "upstreams.t.members[1].prefix",
            "may only use",
        ),
        (
            "  t: {members: []}\n",
            "upstreams.t.members",
            "at least one member",
        ),
        (
            "  t: {members: [a], url: http://t/mcp}\n",
            "upstreams.t.url",
            "no `url` or `command`",
        ),
        (
            "  t: {type: stdio, command: x, members: [a]}\n",
            "upstreams.t.members",
            "drop `type`",
        ),
        (
            "  t: {url: http://t/mcp, prefix: x}\n",
            "upstreams.t.prefix",
            "only a federated route",
        ),
        (
            "  t: {url: http://t/mcp, catalog_ttl: 1000}\n",
            "upstreams.t.catalog_ttl",
            "caches catalogs",
        ),
    ] {
        assert_error_at(&format!("{base}{team}"), path, needle);
    }
}
