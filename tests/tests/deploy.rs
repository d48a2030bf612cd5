//! The deployment files, checked as far as a machine without a container engine can: every YAML
//! file under deploy/ parses; the gateway config they ship validates with `mcpgate validate`
//! given exactly the environment variables the compose file and the Kubernetes Deployment set;
//! the two replicas, the load balancer, the probes and the non-root image are what the README
//! promises. (Building the image and running compose are left to a machine with Docker.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use mcpgate_e2e::*;
use serde_json::Value;

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    marked_yaml::from_yaml(0, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A scalar as text, whether the YAML loader typed it or not.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// `${NAME}` / `${NAME:-default}` / `${NAME:?message}` references in a text.
fn env_refs(text: &str) -> BTreeSet<(String, bool)> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let inner = &rest[i + 2..];
        let end = inner.find('}').unwrap();
        let expr = &inner[..end];
        let name = expr.split([':', '-', '?']).next().unwrap().to_string();
        out.insert((name, expr.contains(":-")));
        rest = &inner[end..];
    }
    out
}

#[test]
fn deployment_files_parse_and_the_shipped_config_validates() {
    let deploy = repo().join("deploy");
    let mut files = Vec::new();
    yaml_files(&deploy, &mut files);
    assert!(files.len() >= 8, "{files:?}");
    for f in &files {
        yaml(f);
    }

    // Compose: redis, two identical gateway replicas, a load balancer in front of both.
    let compose = yaml(&deploy.join("compose.yaml"));
    let services = compose["services"].as_object().unwrap();
    let (a, b) = (&services["mcpgate-a"], &services["mcpgate-b"]);
    assert_eq!(a, b, "the replicas are identical");
    assert!(services.contains_key("redis") && services.contains_key("lb"));
    let nginx = std::fs::read_to_string(deploy.join("nginx.conf")).unwrap();
    assert!(nginx.contains("server mcpgate-a:8080") && nginx.contains("server mcpgate-b:8080"));
    assert!(nginx.contains("proxy_buffering off"), "SSE is not buffered");
    let compose_env: BTreeSet<String> = a["environment"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();

    // Kubernetes: two replicas, probes on the gateway's health routes, config from the
    // ConfigMap the kustomization makes of deploy/mcpgate.yaml, secrets from a Secret.
    let kustomization = yaml(&deploy.join("kustomization.yaml"));
    for r in kustomization["resources"].as_array().unwrap() {
        assert!(deploy.join(r.as_str().unwrap()).exists(), "{r}");
    }
    assert_eq!(
        kustomization["configMapGenerator"][0]["files"][0],
        "mcpgate.yaml"
    );
    let deployment = yaml(&deploy.join("kubernetes/deployment.yaml"));
    let spec = &deployment["spec"];
    assert!(scalar(&spec["replicas"]).parse::<u32>().unwrap() >= 2);
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        scalar(&spec["template"]["spec"]["securityContext"]["runAsNonRoot"]),
        "true"
    );
    // Stopping: the grace periods cover the preStop pause, the drain (shutdown_timeout) and the
    // flush of the audit log and span exporter (up to 5 s each, see main.rs).
    let shutdown_s = std::fs::read_to_string(deploy.join("mcpgate.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("shutdown_timeout:"))
        .and_then(|v| v.split('#').next()?.trim().parse::<u64>().ok())
        .expect("deploy/mcpgate.yaml sets server.shutdown_timeout")
        / 1000;
    let pre_stop: u64 = scalar(&container["lifecycle"]["preStop"]["sleep"]["seconds"])
        .parse()
        .expect("a preStop pause");
    let grace: u64 = scalar(&spec["template"]["spec"]["terminationGracePeriodSeconds"])
        .parse()
        .unwrap();
    assert!(
        grace >= pre_stop + shutdown_s + 10,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain {shutdown_s} + flush 10"
    );
    let stop_grace: u64 = scalar(&a["stop_grace_period"])
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        stop_grace >= shutdown_s + 10,
        "compose stop_grace_period {stop_grace}"
    );
    let k8s_env: BTreeSet<String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    for secret in ["MCPGATE_SESSION_KEY", "MCPGATE_CLIENT_KEY"] {
        let e = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == secret)
            .unwrap();
        assert!(
            e["valueFrom"]["secretKeyRef"].is_object(),
            "{secret} comes from a Secret"
        );
    }

    // The image: built from the workspace, run as a non-root user.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 65532:65532") && dockerfile.contains(":nonroot"));

    // The config needs only variables both deployments set (or that have defaults)...
    let config_path = deploy.join("mcpgate.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let required: BTreeSet<String> = env_refs(&config)
        .into_iter()
        .filter(|(_, has_default)| !has_default)
        .map(|(n, _)| n)
        .collect();
    assert!(required.contains("MCPGATE_SESSION_KEY") && required.contains("REDIS_URL"));
    for (name, set) in [("compose", &compose_env), ("kubernetes", &k8s_env)] {
        let missing: Vec<_> = required.difference(set).collect();
        assert!(missing.is_empty(), "{name} does not set {missing:?}");
    }
    // ...and, given them, validates (plugins loaded from the repository's plugins/ folder, which
    // the image ships at /plugins).
    let key = Command::new(mcpgate_bin()).arg("gen-key").output().unwrap();
    let key = String::from_utf8(key.stdout).unwrap();
    let mut validate = Command::new(mcpgate_bin());
    validate
        .args(["validate", "--config"])
        .arg(&config_path)
        .env_clear()
        .env("MCPGATE_PLUGIN_DIR", repo().join("plugins"))
        .env("HOME", std::env::temp_dir());
    for name in &compose_env {
        let value = match name.as_str() {
            "MCPGATE_SESSION_KEY" => key.trim(),
            "REDIS_URL" => "redis://127.0.0.1:6379/0",
            "UPSTREAM_URL" => "http://127.0.0.1:3001/mcp",
            _ => "a-secret-value",
        };
        validate.env(name, value);
    }
    let out = validate.output().unwrap();
    assert!(
        out.status.success(),
        "deploy/mcpgate.yaml validates: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 upstream, 1 plugin)"));

    // Without the session key it does not: replicas must not each generate their own.
    validate.env_remove("MCPGATE_SESSION_KEY");
    let out = validate.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("MCPGATE_SESSION_KEY"),
        "{err}"
    );
}
