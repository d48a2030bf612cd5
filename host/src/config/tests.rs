use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "GH_TOKEN" => Some("ghp_secret".into()),
        "API_VALUE" => Some("v-123".into()),
        "PORT" => Some("9090".into()),
        "UPSTREAM_HOST" => Some("127.0.0.1:3001".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, "test.yaml", &env)
}

/// (path, line) of every error, for table assertions.
fn errors(text: &str) -> Vec<(String, Option<usize>, String)> {
    parse(text)
        .unwrap_err()
        .errors
        .into_iter()
        .map(|e| (e.path, e.line, e.message))
        .collect()
}

#[test]
fn a_full_config_compiles() {
    let cfg = parse(
        "server:\n  port: ${PORT}\n  bind: 0.0.0.0\n  max_body_bytes: 1024\n  allowed_origins: [\"https://app.example.com\", \"http://localhost:*\"]\n\
         sessions:\n  key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n  ttl: 1000\n\
         upstreams:\n  github:\n    url: http://${UPSTREAM_HOST}/mcp\n    timeout: 5000\n    auth: {type: bearer, token_env: GH_TOKEN}\n\
         \x20 other:\n    url: https://example.com/mcp?x=1\n    stream_idle_timeout: 0\n    auth:\n      type: header\n      header: X-API-Key\n      value_env: API_VALUE\n",
    )
    .unwrap();
    assert_eq!(cfg.server.port, 9090);
    assert_eq!(cfg.server.bind.to_string(), "0.0.0.0");
    assert_eq!(cfg.server.max_body_bytes, 1024);
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
