//! One MCP server process spoken to over stdio: newline-delimited JSON-RPC on stdin and stdout,
//! stderr into the gateway's log. What the process writes is never trusted: a stdout line that
//! is not a JSON object is logged and skipped, a line over the bound is dropped without being
//! held, stderr lines are cut and their rate bounded, and the process's end is reported once.
//!
//! The child gets only the environment the config names (plus `PATH`), never the gateway's own
//! (its secrets), and is killed when its handle is dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;

/// A stderr line longer than this is cut (the rest of the line is dropped).
pub const MAX_STDERR_LINE: usize = 4096;
/// Stderr lines logged per second per process; past it they are counted and dropped.
pub const MAX_STDERR_LINES_PER_SECOND: u32 = 100;

/// What starts one server process (`upstreams.<name>` with `type: stdio`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The route it serves, for logs.
    pub route: Arc<str>,
    pub command: String,
    pub args: Vec<String>,
    /// The child's whole environment, besides `PATH`.
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// The largest message read from stdout; a longer line is dropped.
    pub max_message_bytes: usize,
}

/// What a child's stdout brought, in order.
#[derive(Debug)]
pub enum FromChild {
    /// One JSON-RPC message (a JSON object, as the child wrote it).
    Message(Bytes),
    /// The process ended (or its stdout closed): nothing more will come. Carries why.
    Ended(String),
}

/// A running server process. Dropping it kills the process.
#[derive(Debug)]
pub struct Child {
    stdin: mpsc::Sender<Bytes>,
    pid: Option<u32>,
    _kill: tokio::sync::oneshot::Sender<()>,
}

impl Child {
    /// Starts the process. Its messages (and, last, its end) arrive on the returned receiver.
    pub fn spawn(spec: &ChildSpec) -> std::io::Result<(Child, mpsc::Receiver<FromChild>)> {
        let mut cmd = tokio::process::Command::new(&spec.command);
        cmd.args(&spec.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(&spec.env);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        let mut process = cmd.spawn()?;
        let pid = process.id();
        let stdin = process.stdin.take().expect("piped stdin");
        let stdout = process.stdout.take().expect("piped stdout");
        let stderr = process.stderr.take().expect("piped stderr");

        let (to_child, mut lines) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(line) = lines.recv().await {
                if stdin.write_all(&line).await.is_err() || stdin.write_all(b"\n").await.is_err() {
                    break;
                }
                let _ = stdin.flush().await;
            }
        });
        tokio::spawn(log_stderr(spec.route.clone(), stderr));

        let (events, from_child) = mpsc::channel(256);
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let route = spec.route.clone();
        let max = spec.max_message_bytes;
        tokio::spawn(async move {
            let read = read_messages(&route, stdout, max, &events);
            let why = tokio::select! {
                why = read => why,
                _ = killed => {
                    let _ = process.start_kill();
                    "stopped by the gateway".to_string()
                }
            };
            // Reap it (bounded: a child that ignores its closed stdout is killed).
            let status = match tokio::time::timeout(Duration::from_secs(2), process.wait()).await {
                Ok(Ok(status)) => status.to_string(),
                _ => {
                    let _ = process.kill().await;
                    "killed".to_string()
                }
            };
            let _ = events
                .send(FromChild::Ended(format!("{why} ({status})")))
                .await;
        });
        Ok((
            Child {
                stdin: to_child,
                pid,
                _kill: kill,
            },
            from_child,
        ))
    }

    /// Writes one message (a JSON object without newlines) to the child's stdin. `false` when the
    /// child is gone.
    pub async fn send(&self, message: Bytes) -> bool {
        self.stdin.send(message).await.is_ok()
    }

    /// [`Child::send`] without waiting (from a `Drop`): `false` when the child is gone or its
    /// stdin queue is full.
    pub fn try_send(&self, message: Bytes) -> bool {
        self.stdin.try_send(message).is_ok()
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// Reads stdout line by line until it closes; each line that is a JSON object is a message.
/// Returns why it stopped.
async fn read_messages<R: AsyncRead + Unpin>(
    route: &str,
    stdout: R,
    max: usize,
    events: &mpsc::Sender<FromChild>,
) -> String {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_bounded_line(&mut reader, &mut line, max).await {
            Ok(Line::End) => return "stdout closed".into(),
            Ok(Line::TooLong(n)) => {
                tracing::warn!(
                    route,
                    bytes = n,
                    max,
                    "stdio server wrote a message over the bound: dropped"
                );
            }
            Ok(Line::Complete) => {
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                if text.first() != Some(&b'{')
                    || serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err()
                {
                    let shown = String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned();
                    tracing::warn!(route, line = %shown, "stdio server wrote a line that is not a JSON-RPC message: skipped");
                    continue;
                }
                if events
                    .send(FromChild::Message(Bytes::copy_from_slice(text)))
                    .await
                    .is_err()
                {
                    return "nobody listens".into();
                }
            }
            Err(e) => return format!("stdout failed: {e}"),
        }
    }
}

enum Line {
    Complete,
    /// Longer than the bound: this many bytes were read up to its newline, only the first
    /// `max` of them kept.
    TooLong(usize),
    End,
}

/// One line into `out` (without the newline), holding at most its first `max` bytes.
async fn read_bounded_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    out: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    let mut seen = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if seen == 0 {
                Line::End
            } else if seen > max {
                Line::TooLong(seen)
            } else {
                Line::Complete
            });
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        // Holds at most `max` bytes: the start of a longer line (its caller drops or cuts it).
        let room = max.saturating_sub(seen);
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        seen += chunk.len();
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(if seen > max {
                Line::TooLong(seen)
            } else {
                Line::Complete
            });
        }
    }
}

/// Logs the child's stderr, line by line, labelled with its route: lines cut at
/// [`MAX_STDERR_LINE`], at most [`MAX_STDERR_LINES_PER_SECOND`] a second (the rest counted).
async fn log_stderr<R: AsyncRead + Unpin>(route: Arc<str>, stderr: R) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut window = Instant::now();
    let (mut logged, mut dropped) = (0u32, 0u64);
    loop {
        line.clear();
        let cut = match read_bounded_line(&mut reader, &mut line, MAX_STDERR_LINE).await {
            Ok(Line::End) | Err(_) => break,
            Ok(Line::Complete) => None,
            Ok(Line::TooLong(n)) => Some(n),
        };
        if window.elapsed() >= Duration::from_secs(1) {
            report_dropped(&route, dropped);
            window = Instant::now();
            logged = 0;
            dropped = 0;
        }
        if logged >= MAX_STDERR_LINES_PER_SECOND {
            dropped += 1;
            continue;
        }
        logged += 1;
        let text = String::from_utf8_lossy(&line);
        match cut {
            None => tracing::info!(route = %route, "stdio server: {}", text.trim_end()),
            Some(n) => {
                tracing::info!(route = %route, "stdio server: {}… (a line of {n} bytes, cut)", text)
            }
        }
    }
    // A burst at the end is reported too, not only when a later line opens a new window.
    report_dropped(&route, dropped);
}

fn report_dropped(route: &str, dropped: u64) {
    if dropped > 0 {
        tracing::warn!(
            route,
            dropped,
            "stdio server stderr: lines dropped (over the rate bound)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> ChildSpec {
        ChildSpec {
            route: "t".into(),
            command: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::from([("ONLY".to_string(), "this".to_string())]),
            cwd: None,
            max_message_bytes: 64,
        }
    }

    async fn collect(mut rx: mpsc::Receiver<FromChild>) -> (Vec<String>, String) {
        let mut messages = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(FromChild::Message(m))) => {
                    messages.push(String::from_utf8(m.to_vec()).unwrap());
                }
                Ok(Some(FromChild::Ended(why))) => return (messages, why),
                other => panic!("no end: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn only_json_objects_within_the_bound_come_through_and_the_end_is_reported() {
        let script = r#"
            echo '{"jsonrpc":"2.0","id":1,"result":{}}'
            echo 'Server starting on stdio...'
            echo '[1,2]'
            echo '{"broken":'
            printf '{"jsonrpc":"2.0","method":"%0100d"}\n' 0
            echo ''
            printf '{"jsonrpc":"2.0","id":2,"result":{}}\r\n'
            exit 3
        "#;
        let (_child, rx) = Child::spawn(&spec(script)).unwrap();
        let (messages, why) = collect(rx).await;
        assert_eq!(
            messages,
            [
                r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                r#"{"jsonrpc":"2.0","id":2,"result":{}}"#
            ]
        );
        assert!(why.contains("stdout closed") && why.contains('3'), "{why}");
    }

    #[tokio::test]
    async fn the_child_sees_only_its_own_environment_and_answers_stdin() {
        // HOME stands for the gateway's environment (where its secrets are): the child must not
        // see it.
        assert!(
            std::env::var_os("HOME").is_some(),
            "the test needs HOME set"
        );
        let script = r#"
            read line
            printf '{"env":"%s","secret":"%s","echo":%s}\n' "$ONLY" "${HOME:-}" "$line"
        "#;
        let mut s = spec(script);
        s.max_message_bytes = 1024;
        let (child, rx) = Child::spawn(&s).unwrap();
        assert!(child.send(Bytes::from_static(br#"{"id":9}"#)).await);
        let (messages, _) = collect(rx).await;
        assert_eq!(messages, [r#"{"env":"this","secret":"","echo":{"id":9}}"#]);
    }

    #[tokio::test]
    async fn dropping_the_handle_kills_the_process() {
        let (child, rx) = Child::spawn(&spec("sleep 60")).unwrap();
        assert!(child.pid().is_some());
        drop(child);
        let started = Instant::now();
        let (_, why) = collect(rx).await;
        assert!(why.contains("stopped by the gateway"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_command_that_does_not_exist_fails_to_spawn() {
        let mut s = spec("");
        s.command = "/nonexistent/mcp-server".into();
        assert!(Child::spawn(&s).is_err());
    }
}
