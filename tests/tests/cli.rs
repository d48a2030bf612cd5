//! The `mcpgate` command line: validate (every shipped config, and a broken one), list-servers,
//! gen-key, help.

use std::process::Command;

use mcpgate_e2e::*;

/// Env vars the shipped configs reference through `token_env` / `value_env`.
const EXAMPLE_ENV: &[(&str, &str)] = &[
    ("GITHUB_TOKEN", "ghp_example"),
    ("SEARCH_API_KEY", "example-key"),
    ("CI_BOT_KEY", "ci-bot-example-key"),
];

#[test]
fn every_shipped_config_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let (ok, stdout, stderr) = run_mcpgate(
            &["validate", "--config", path.to_str().unwrap()],
            EXAMPLE_ENV,
        );
        assert!(ok, "{} does not validate:\n{stderr}", path.display());
        assert!(stdout.contains(": OK ("), "{stdout}");
        checked += 1;
    }
    assert!(
        checked >= 3,
        "config/ holds the examples and the demo config"
    );
}

#[test]
fn validate_reports_every_error_with_key_and_line_and_exits_non_zero() {
    let dir = TempDir::new("cli");
    let cfg = dir.file(
        "bad.yaml",
        "server:\n  port: http\nupstreams:\n  a:\n    url: ftp://x/mcp\n    timeuot: 5\n  b:\n    url: http://127.0.0.1:1/mcp\n    auth: {type: bearer, token_env: MCPGATE_UNSET_TOKEN}\n",
    );
    let (ok, _, stderr) = run_mcpgate(&["validate", "--config", cfg.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(stderr.contains("4 errors"), "{stderr}");
    for needle in [
        "bad.yaml:2: server.port:",
        "bad.yaml:5: upstreams.a.url:",
        "bad.yaml:6: upstreams.a.timeuot: unknown key `timeuot`",
        "bad.yaml:9: upstreams.b.auth.token_env: environment variable `MCPGATE_UNSET_TOKEN` is not set",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    let (ok, _, stderr) = run_mcpgate(&["validate", "--config", "/nonexistent/mcpgate.yaml"], &[]);
    assert!(!ok);
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert!(
        stderr.contains("config/mcpgate.example.yaml"),
        "points a newcomer at the example: {stderr}"
    );
}

#[test]
fn list_servers_gen_key_and_help() {
    let (ok, stdout, stderr) = run_mcpgate(
        &["list-servers", "--config", "config/mcpgate.example.yaml"],
        EXAMPLE_ENV,
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("/servers/github/mcp -> https://api.githubcopilot.com/mcp/"),
        "{stdout}"
    );
    assert!(stdout.contains("sends authorization"), "{stdout}");
    assert!(stdout.contains("/servers/internal-search/mcp"), "{stdout}");
    assert!(
        stdout.contains("stages: auth → rate_limit → policy"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stages: auth → policy"),
        "a route's own pipeline: {stdout}"
    );
    assert!(
        !stdout.contains("ghp_example"),
        "secrets are never printed: {stdout}"
    );

    let (ok, key, _) = run_mcpgate(&["gen-key"], &[]);
    assert!(ok);
    assert_eq!(key.trim().len(), 44, "32 bytes in base64: {key}");

    let (ok, help, _) = run_mcpgate(&["--help"], &[]);
    assert!(ok);
    for word in ["start", "validate", "list-servers", "Quick start"] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
    let (ok, _, _) = run_mcpgate(&["start", "--config", "/nonexistent.yaml"], &[]);
    assert!(!ok, "start refuses a config it cannot read");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = TempDir::new("cli");
    let cfg = dir.file(
        "gw.yaml",
        "upstreams:\n  a:\n    url: http://127.0.0.1:9/mcp\n",
    );
    let (mut gw, base) = start_gateway(&cfg, &[]);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let killed = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = gw
        .wait(std::time::Duration::from_secs(30))
        .expect("mcpgate exits after SIGTERM");
    assert!(status.success(), "clean exit after draining: {status:?}");
    let log = gw.drain().join("\n");
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn validate_loads_plugins_and_reports_their_three_load_errors() {
    let dir = TempDir::new("cli");
    // Bare file names are found in plugin_runtime.dir (default `plugins`, relative to the
    // working directory, which is the repository here).
    let cfg = dir.file(
        "plugins.yaml",
        "upstreams:\n  a:\n    url: http://127.0.0.1:1/mcp\nplugins:\n  gone:\n    file: no-such-plugin.wasm\n  counter:\n    file: quota.wasm\n    config: {limits: [{tools: ['*'], calls: 3}]}\n  strict:\n    file: arg_guard.wasm\n    config:\n      tools: {t: {required: [x]}}\n",
    );
    let (ok, _, stderr) = run_mcpgate(&["validate", "--config", cfg.to_str().unwrap()], &[]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("3 errors"), "{stderr}");
    for needle in [
        "plugins.yaml:6: plugins.gone.file: cannot read `plugins/no-such-plugin.wasm`",
        "plugins.yaml:7: plugins.counter.grants: `plugins/quota.wasm` cannot load: imports `mcpgate:plugin/kv@0.2.0`, which is not granted (add `kv: true` under plugins.counter.grants)",
        "plugins.yaml:12: plugins.strict.config: plugin `strict` rejected its config: tools.t: required argument `x` has no rule",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }

    // Fixed, the same file validates (plugins compiled, imports checked, init run).
    let good = dir.file(
        "plugins-ok.yaml",
        "upstreams:\n  a:\n    url: http://127.0.0.1:1/mcp\nplugins:\n  counter:\n    file: quota.wasm\n    grants: {kv: true, metrics: true}\n    config: {limits: [{tools: ['*'], calls: 3}]}\n  strict:\n    file: arg_guard.wasm\n    config:\n      tools: {t: {required: [x], arguments: {x: {type: string}}}}\n",
    );
    let (ok, stdout, stderr) = run_mcpgate(&["validate", "--config", good.to_str().unwrap()], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("OK (1 upstream, 2 plugins)"), "{stdout}");
}

/// README's three commands for a plugin author, as the scaffold prints them: scaffold, build,
/// then the demo with the plugin in the pipeline, where the Python SDK's client calls tools
/// through it and the upstream receives what the plugin added.
#[test]
fn a_new_plugin_answers_a_real_request_in_three_commands() {
    let dir = TempDir::new("newplugin");
    let crate_dir = dir.0.join("acme_guard");
    // The build shares the repository's cache (the script reads CARGO_TARGET_DIR like cargo).
    let shell = |line: &str| {
        Command::new("bash")
            .args(["-c", line])
            .current_dir(repo())
            .env("CARGO_TARGET_DIR", repo().join("target"))
            .env("MCPGATE_DEMO_PREBUILT", "1")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CLIPPY_ARGS")
            .output()
            .unwrap()
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // 1. Scaffold (standalone, as in a plugin author's own repository).
    let out = shell(&format!(
        "scripts/new-plugin.sh acme_guard {}",
        crate_dir.display()
    ));
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let next: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("$ "))
        .collect();
    assert_eq!(next.len(), 2, "a build and a demo command: {printed}");
    assert!(next[1].starts_with("scripts/demo.sh"), "{printed}");
    // 2. Build it, exactly as printed.
    let out = shell(next[0]);
    assert!(out.status.success(), "{}", text(&out));
    // 3. The demo, as printed (`--once`: it would stay up until Ctrl-C).
    let out = shell(&format!("{} --once", next[1]));
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("add(2, 40) = 42"), "{shown}");
    assert!(
        shown.contains(r#""x-greeting": "hello""#),
        "the plugin's header reached the upstream: {shown}"
    );
    assert!(shown.contains("demo OK"), "{shown}");
}

/// The commands a newcomer types first, read from where they read them (`mcpgate --help` and
/// README's "Using it"), run as written on this checkout with nothing set in the environment.
/// `start` gets `--port 0` added (tests never take a fixed port) and must come up listening.
#[test]
fn the_first_commands_of_help_and_readme_succeed_on_a_fresh_checkout() {
    let (ok, help, _) = run_mcpgate(&["--help"], &[]);
    assert!(ok);
    let from_help: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Quick start"))
        .filter_map(|l| l.trim().strip_prefix("mcpgate "))
        .map(str::to_string)
        .collect();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let using_it = readme
        .split("## Using it")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README has a `## Using it` section with a sh block");
    let from_readme: Vec<String> = using_it
        .lines()
        .filter_map(|l| l.trim().strip_prefix("target/release/mcpgate "))
        .map(|l| l.split('#').next().unwrap().trim().to_string())
        .collect();
    assert!(from_help.len() >= 3, "{help}");
    assert!(from_readme.len() >= 3, "{using_it}");
    for line in from_help.iter().chain(&from_readme) {
        let args: Vec<&str> = line.split_whitespace().collect();
        if args[0] == "start" {
            let mut cmd = Command::new(mcpgate_bin());
            cmd.args(&args)
                .args(["--port", "0"])
                .current_dir(repo())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
            let mut gw = Proc::spawn("mcpgate start", &mut cmd);
            gw.wait_for("mcpgate listening on ", std::time::Duration::from_secs(30));
            continue;
        }
        let (ok, stdout, stderr) = run_mcpgate(&args, &[]);
        assert!(ok, "`mcpgate {line}` failed:\n{stdout}{stderr}");
        if args[0] == "validate" {
            assert!(
                stdout.contains("config/mcpgate.yaml: OK (1 upstream, 0 plugins)"),
                "{stdout}"
            );
        }
        if args[0] == "list-servers" {
            assert!(
                stdout.contains(
                    "http://127.0.0.1:8080/servers/demo/mcp -> http://127.0.0.1:3001/mcp"
                ),
                "{stdout}"
            );
        }
    }

    // The annotated example reads its secrets from the environment; unset, `validate` names
    // each and says how to set them.
    let (ok, _, stderr) = run_mcpgate(
        &["validate", "--config", "config/mcpgate.example.yaml"],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("export CI_BOT_KEY=... GITHUB_TOKEN=... SEARCH_API_KEY=..."),
        "{stderr}"
    );

    // The starter's commented auth and rate-limit snippet works once uncommented.
    let starter = std::fs::read_to_string(repo().join("config/mcpgate.yaml")).unwrap();
    // The block that starts at `# auth:` and ends at the next blank line.
    let mut in_block = false;
    let uncommented: String = starter
        .lines()
        .map(|l| {
            in_block = (in_block || l == "# auth:") && !l.trim().is_empty();
            let l = if in_block {
                l.strip_prefix("# ").unwrap_or(l)
            } else {
                l
            };
            format!("{l}\n")
        })
        .collect();
    assert!(
        uncommented.contains("\nauth:\n") && uncommented.contains("\nrate_limit:\n"),
        "{uncommented}"
    );
    let dir = TempDir::new("cli-starter");
    let cfg = dir.file("starter.yaml", &uncommented);
    let (ok, stdout, stderr) = run_mcpgate(
        &["list-servers", "--config", cfg.to_str().unwrap()],
        &[("MY_API_KEY", "my-example-key")],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("stages: auth → rate_limit"), "{stdout}");
}
