//! HTTPS on the listener (`server.tls`), through the real binary: the Python SDK client in both
//! eras over https with a CA made for the test, HTTP/2 offered through ALPN, and a plain-HTTP
//! client or one that does not trust the certificate refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mcpgate_e2e::*;

/// A CA and a certificate it signed for 127.0.0.1, made with openssl in `dir`: (ca, cert, key).
fn test_pki(dir: &Path) -> (String, String, String) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (the system's) makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mcpgate test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

#[test]
fn sdk_clients_reach_an_https_listener_with_http2_offered() {
    let dir = TempDir::new("tls");
    let (ca, cert, key) = test_pki(&dir.0);
    let (_server, upstream) = start_demo_server();
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\n  tls: {{cert: \"{cert}\", key: \"{key}\"}}\nupstreams:\n  demo:\n    url: {upstream}\n"
        ),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let url = format!("{base}/servers/demo/mcp");
    for (mode, version) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        let out = run_client(
            &format!("py_client {mode} over https"),
            Command::new(python())
                .arg(repo().join("tests/e2e/py_client.py"))
                .args([&url, mode])
                .env("SSL_CERT_FILE", &ca),
            Duration::from_secs(120),
        );
        assert_eq!(out["protocol_version"], version, "{out}");
        assert_eq!(out["echo"], "héllo through the gateway", "{out}");
        assert_eq!(out["add"], "42", "{out}");
    }

    // The handshake, as a client sees it: HTTP/2 chosen through ALPN, the certificate verified
    // against the test CA; without that CA, the certificate is refused; plain HTTP gets no answer.
    let port = base.rsplit(':').next().unwrap();
    let probe = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2", "http/1.1"])
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        print("alpn", t.selected_alpn_protocol())
try:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        ssl.create_default_context().wrap_socket(s, server_hostname="127.0.0.1")
    print("untrusted accepted")
except ssl.SSLCertVerificationError:
    print("untrusted refused")
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        data = s.recv(100)
    except (ConnectionResetError, socket.timeout):
        data = b""
    print("plain", b"HTTP/1.1 200" in data)
"#;
    let out = Command::new(python())
        .args(["-c", probe, port, &ca])
        .env_remove("SSL_CERT_FILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("alpn h2"), "{text}");
    assert!(text.contains("untrusted refused"), "{text}");
    assert!(text.contains("plain False"), "{text}");
}

#[test]
fn a_certificate_that_cannot_be_used_is_reported_at_its_key() {
    let dir = TempDir::new("tls-bad");
    let (_ca, cert, _key) = test_pki(&dir.0);
    let other = dir.file(
        "other.key",
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    for (tls, key, needle) in [
        (
            format!("{{cert: \"{cert}\", key: \"{}\"}}", other.display()),
            "server.tls.key",
            "private key",
        ),
        (
            format!(
                "{{cert: \"{}\", key: \"{cert}\"}}",
                dir.0.join("missing.pem").display()
            ),
            "server.tls.cert",
            "cannot read",
        ),
        (
            format!("{{cert: \"{cert}\"}}"),
            "server.tls.key",
            "required",
        ),
    ] {
        let cfg = dir.file(
            "gw.yaml",
            &format!("server:\n  tls: {tls}\nupstreams:\n  a:\n    url: http://127.0.0.1:1/mcp\n"),
        );
        let out = Command::new(mcpgate_bin())
            .args(["validate", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(&format!("gw.yaml:2: {key}")), "{key}: {text}");
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

/// Hostile handshakes: a client that sends half a ClientHello and stalls is cut off after
/// `server.header_timeout` (SECURITY.md), one that sends garbage is closed, and neither holds up
/// a client that completes its handshake.
#[test]
fn stalled_and_garbage_handshakes_are_cut_off_without_holding_up_others() {
    use std::io::{Read, Write};
    use std::time::Instant;
    let dir = TempDir::new("tls-hostile");
    let (ca, cert, key) = test_pki(&dir.0);
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\n  header_timeout: 500\n  tls: {{cert: \"{cert}\", key: \"{key}\"}}\nupstreams:\n  a:\n    url: http://127.0.0.1:1/mcp\n"
        ),
    );
    let (_gw, base) = start_gateway(&cfg, &[]);
    let addr = base.trim_start_matches("https://").to_string();
    let closed_within = |mut s: std::net::TcpStream, bound: Duration| {
        s.set_read_timeout(Some(bound)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                // A TLS alert before the close is fine; keep reading until the close.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return started.elapsed();
                }
                Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
            }
        }
    };
    // Half a ClientHello (a handshake record header announcing 512 bytes, and 4 of them).
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .unwrap();
    // Meanwhile a real client's handshake and request go through.
    let probe = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        t.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        print(t.recv(100).decode(errors="replace").splitlines()[0])
"#;
    let port = addr.rsplit(':').next().unwrap();
    let out = Command::new(python())
        .args(["-c", probe, port, &ca])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("HTTP/1.1 200"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let waited = closed_within(stalled, Duration::from_secs(10));
    assert!(waited < Duration::from_secs(10), "{waited:?}");

    // Garbage instead of a ClientHello: closed at once, not after the timeout.
    let mut garbage = std::net::TcpStream::connect(&addr).unwrap();
    garbage
        .write_all(b"\x00\x01\x02 not tls at all\r\n\r\n")
        .unwrap();
    let waited = closed_within(garbage, Duration::from_secs(10));
    assert!(waited < Duration::from_millis(400), "{waited:?}");
}

/// Which of two CAs the listener's certificate verifies against now, as a fresh client sees it.
fn trusted_by(port: &str, cas: &[&str]) -> Vec<bool> {
    let probe = r#"
import socket, ssl, sys
port = int(sys.argv[1])
for ca in sys.argv[2:]:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="127.0.0.1").close()
        print("trusted")
    except ssl.SSLCertVerificationError:
        print("refused")
"#;
    let out = Command::new(python())
        .args(["-c", probe, port])
        .args(cas)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().map(|l| l == "trusted").collect()
}

#[test]
fn a_renewed_certificate_is_served_after_its_files_change() {
    let dir = TempDir::new("tls-renew");
    let (old_dir, new_dir, live) = (dir.0.join("old"), dir.0.join("new"), dir.0.join("live"));
    for d in [&old_dir, &new_dir, &live] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (old_ca, old_cert, old_key) = test_pki(&old_dir);
    let (new_ca, new_cert, new_key) = test_pki(&new_dir);
    let (cert, key) = (live.join("server.pem"), live.join("server.key"));
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let (_server, upstream) = start_demo_server();
    let cfg = dir.file(
        "gw.yaml",
        &format!(
            "server:\n  port: 0\n  watch_config: true\n  tls: {{cert: \"{}\", key: \"{}\"}}\nupstreams:\n  demo:\n    url: {upstream}\n",
            cert.display(),
            key.display()
        ),
    );
    let (mut gw, base) = start_gateway(&cfg, &[]);
    let port = base.rsplit(':').next().unwrap().to_string();
    assert_eq!(trusted_by(&port, &[&old_ca, &new_ca]), [true, false]);

    let url = format!("{base}/servers/demo/mcp");
    // The renewal: the key, then the chain, written in place (as certbot's deploy hooks do).
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    gw.wait_for("config reloaded", Duration::from_secs(60));
    assert_eq!(trusted_by(&port, &[&old_ca, &new_ca]), [false, true]);
    let out = run_client(
        "py_client over the renewed certificate",
        Command::new(python())
            .arg(repo().join("tests/e2e/py_client.py"))
            .args([&url, "2026-07-28"])
            .env("SSL_CERT_FILE", &new_ca),
        Duration::from_secs(120),
    );
    assert_eq!(out["echo"], "héllo through the gateway", "{out}");

    // A half-written renewal (a key that does not match the chain) is refused; the renewed
    // certificate keeps being served.
    std::fs::copy(&old_key, &key).unwrap();
    gw.wait_for("config reload refused", Duration::from_secs(60));
    assert_eq!(trusted_by(&port, &[&old_ca, &new_ca]), [false, true]);
}
