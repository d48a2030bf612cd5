//! A blocking WebSocket client for the gateway's WebSocket routes (tungstenite), for tests that
//! need what the SDK clients never do: bad frames, huge messages, silence, abrupt ends.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest as _;
use tungstenite::protocol::WebSocket;
use tungstenite::{Error, Message};

/// One WebSocket to the gateway.
pub struct Ws {
    pub socket: WebSocket<TcpStream>,
    /// The subprotocol the gateway chose (`Sec-WebSocket-Protocol`).
    pub protocol: Option<String>,
}

/// What came next on a socket.
#[derive(Debug)]
pub enum WsEvent {
    /// A text message, parsed.
    Json(Value),
    /// The gateway's close frame: code and reason (`None`: a close without a frame).
    Close(Option<(u16, String)>),
    /// The connection ended without a close frame, or nothing came in time.
    Gone(String),
}

/// Opens `url` (`ws://...`) offering the `mcp` subprotocol, with extra headers; `Err` with the
/// HTTP status and body when the gateway refused the upgrade.
pub fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, (u16, String)> {
    ws_connect_offering(url, Some("mcp"), headers)
}

/// [`ws_connect`] offering `protocol` (or none).
pub fn ws_connect_offering(
    url: &str,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    let mut request = url.into_client_request().unwrap();
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let authority = request.uri().authority().unwrap().as_str().to_string();
    let tcp = TcpStream::connect(&authority).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    match tungstenite::client(request, tcp) {
        Ok((socket, response)) => Ok(Ws {
            socket,
            protocol: response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string()),
        }),
        Err(tungstenite::HandshakeError::Failure(Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(e) => panic!("WebSocket handshake with {url} failed: {e}"),
    }
}

impl Ws {
    pub fn send(&mut self, message: &Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).unwrap();
    }

    /// The next text message or the end, within `timeout` (pings and pongs are skipped; the
    /// client answers pings as it reads).
    pub fn next(&mut self, timeout: Duration) -> WsEvent {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return WsEvent::Gone("nothing came in time".into());
            }
            self.socket.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.socket.read() {
                Ok(Message::Text(t)) => {
                    return WsEvent::Json(
                        serde_json::from_str(&t)
                            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", t.as_str())),
                    );
                }
                Ok(Message::Close(frame)) => {
                    return WsEvent::Close(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    );
                }
                Ok(_) => {}
                Err(Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return WsEvent::Gone(e.to_string()),
            }
        }
    }

    /// The next text message, which must come within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Value {
        match self.next(timeout) {
            WsEvent::Json(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Messages until the response with `id` (included, last).
    pub fn until_response(&mut self, id: &Value, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let m = self.recv(deadline.saturating_duration_since(Instant::now()));
            let done = m.get("method").is_none() && m.get("id") == Some(id);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }

    /// The close frame that must come within `timeout`, skipping messages.
    pub fn closed(&mut self, timeout: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                WsEvent::Json(_) => {}
                WsEvent::Close(frame) => return frame,
                WsEvent::Gone(why) => panic!("expected a close frame: {why}"),
            }
        }
    }

    /// A legacy `initialize` (protocol `version`) and `notifications/initialized`; the result.
    pub fn initialize(&mut self, version: &str) -> Value {
        self.send(
            &json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "mcpgate-ws-test", "version": "1"}}}),
        );
        let answer = self
            .until_response(&json!("init"), Duration::from_secs(30))
            .pop()
            .unwrap();
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        answer
    }
}
