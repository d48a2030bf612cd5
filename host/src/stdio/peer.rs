//! JSON-RPC with one stdio server process: each request goes out under an id of the gateway's own
//! (`mcpgate-<n>`), so requests of different clients never collide on the process's stdin, and
//! its answer comes back under the client's id, byte for byte otherwise. Everything else the
//! server writes (notifications, its own requests: sampling, elicitation, roots) goes to the
//! listener, called in the order the server wrote: a progress notification written before an
//! answer is delivered before that answer is. When the process ends, every request still waiting
//! gets [`PeerError::Ended`] at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::child::{Child, ChildSpec, FromChild};
use crate::mcp::{Message, MessageKind};

/// Receives what the server writes on its own, in order, on the task reading its stdout (so it
/// must not block).
pub type Listener = Arc<dyn Fn(Bytes) + Send + Sync>;

/// Why a request to the process got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("the stdio server process ended ({0})")]
    Ended(String),
    #[error("the stdio server answered with a message that is not a JSON-RPC response: {0}")]
    Invalid(String),
}

/// One running server process and the requests waiting for its answers.
pub struct StdioPeer {
    child: Child,
    pending: Mutex<HashMap<String, oneshot::Sender<Message>>>,
    next: AtomicU64,
    listener: Mutex<Option<Listener>>,
    ended: CancellationToken,
    why: Mutex<Option<String>>,
}

impl std::fmt::Debug for StdioPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioPeer")
            .field("pid", &self.child.pid())
            .field("ended", &self.ended.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Removes the entry of a request that stopped waiting (answered, timed out, its client gone).
/// A request given up before its answer is cancelled at the server (`notifications/cancelled`
/// under the gateway's id), so an abandoned call stops using the process; `initialize` is never
/// cancelled (the protocol forbids it).
struct Waiting<'a> {
    peer: &'a StdioPeer,
    id: String,
    cancellable: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let abandoned = self.peer.lock_pending().remove(&self.id).is_some();
        if abandoned && self.cancellable && !self.peer.ended.is_cancelled() {
            let note = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":"{}","reason":"the client went away"}}}}"#,
                self.id
            );
            // Best effort: a full stdin queue means the server is busy reading anyway.
            let _ = self.peer.child.try_send(Bytes::from(note));
        }
    }
}

impl StdioPeer {
    /// Starts the process and the task that routes what it writes.
    pub fn start(spec: &ChildSpec) -> std::io::Result<Arc<StdioPeer>> {
        let (child, mut from_child) = Child::spawn(spec)?;
        let peer = Arc::new(StdioPeer {
            child,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            listener: Mutex::new(None),
            ended: CancellationToken::new(),
            why: Mutex::new(None),
        });
        let weak = Arc::downgrade(&peer);
        let route = spec.route.clone();
        tokio::spawn(async move {
            while let Some(event) = from_child.recv().await {
                let Some(peer) = weak.upgrade() else { break };
                match event {
                    FromChild::Message(bytes) => peer.route(&route, bytes),
                    FromChild::Ended(why) => {
                        tracing::warn!(route = %route, "stdio server ended: {why}");
                        peer.end(why);
                        break;
                    }
                }
            }
        });
        Ok(peer)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Message>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One message from the process: the answer to a waiting request, or a server message.
    fn route(&self, route: &str, bytes: Bytes) {
        let parsed = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| serde_json::from_str::<Box<RawValue>>(t).ok())
            .and_then(|raw| Message::parse(&raw).ok());
        let Some(message) = parsed else {
            tracing::warn!(
                route,
                "stdio server wrote a message that is not JSON-RPC: skipped"
            );
            return;
        };
        if message.kind == MessageKind::Response {
            let key = message
                .id
                .as_ref()
                .and_then(|id| serde_json::from_str::<String>(id.get()).ok());
            let waiting = key.and_then(|k| self.lock_pending().remove(&k));
            match waiting {
                Some(tx) => {
                    let _ = tx.send(message);
                }
                None => tracing::debug!(route, "stdio server answered a request nobody waits for"),
            }
            return;
        }
        // Nobody listening is fine: a notification with no client stream is dropped.
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(deliver) = listener {
            deliver(bytes);
        }
    }

    fn end(&self, why: String) {
        *self
            .why
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
        self.ended.cancel();
        // Every waiting request learns now (its sender is dropped).
        self.lock_pending().clear();
    }

    /// Why the process ended (`None` while it runs).
    pub fn ended_because(&self) -> Option<String> {
        self.why
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Cancelled when the process has ended.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    fn gone(&self) -> PeerError {
        PeerError::Ended(
            self.ended_because()
                .unwrap_or_else(|| "its stdin closed".to_string()),
        )
    }

    /// Sends a request and waits for its answer, which carries the request's own id. The caller
    /// bounds the wait (dropping this future forgets the request).
    pub async fn call(&self, request: &Message) -> Result<Message, PeerError> {
        if self.ended.is_cancelled() {
            return Err(self.gone());
        }
        let id = format!("mcpgate-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let ours = RawValue::from_string(format!("\"{id}\"")).expect("a JSON string");
        let outgoing = request
            .with_id(&ours)
            .map_err(|e| PeerError::Invalid(e.message))?;
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id.clone(), tx);
        let _waiting = Waiting {
            peer: self,
            id,
            cancellable: request.method() != "initialize",
        };
        if !self
            .child
            .send(Bytes::copy_from_slice(outgoing.raw().get().as_bytes()))
            .await
        {
            return Err(self.gone());
        }
        let answer = rx.await.map_err(|_| self.gone())?;
        match &request.id {
            Some(theirs) => answer
                .with_id(theirs)
                .map_err(|e| PeerError::Invalid(e.message)),
            None => Ok(answer),
        }
    }

    /// Sends a message that gets no answer (a notification, or a client's answer to a server
    /// request, which keeps the server's id).
    pub async fn send(&self, message: &Message) -> Result<(), PeerError> {
        if self.ended.is_cancelled()
            || !self
                .child
                .send(Bytes::copy_from_slice(message.raw().get().as_bytes()))
                .await
        {
            return Err(self.gone());
        }
        Ok(())
    }

    /// Where what the server writes on its own (notifications, requests to the client) goes
    /// from now on.
    pub fn set_listener(&self, listener: Listener) {
        *self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(listener);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    /// A stdio "server" in Python that answers each request with its id and method, sends a
    /// notification first, and dies when asked.
    const ECHO_SERVER: &str = r#"
import json, sys, os
cancelled = []
for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "die":
        os._exit(7)
    if m.get("method") == "notifications/cancelled":
        cancelled.append(m["params"]["requestId"])
    if "id" not in m:
        continue
    if m.get("method") == "cancelled":
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"cancelled": cancelled}}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"for": m["id"]}}), flush=True)
    if m.get("method") == "slow":
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"method": m["method"], "seen_id": m["id"]}}), flush=True)
"#;

    fn spec() -> ChildSpec {
        ChildSpec {
            route: "echo".into(),
            command: "python3".into(),
            args: vec!["-c".into(), ECHO_SERVER.into()],
            env: BTreeMap::new(),
            cwd: None,
            max_message_bytes: 1 << 20,
        }
    }

    fn request(id: &str, method: &str) -> Message {
        let raw = RawValue::from_string(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{}}}}"#
        ))
        .unwrap();
        Message::parse(&raw).unwrap()
    }

    #[tokio::test]
    async fn answers_come_back_under_the_clients_own_ids_even_when_they_collide() {
        let peer = StdioPeer::start(&spec()).unwrap();
        let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
        peer.set_listener(Arc::new(move |m| {
            let _ = tx.send(m);
        }));
        // Two clients both using id 1, and one spelling it as a string: no collision.
        let (ra, rb, rc) = (
            request("1", "tools/list"),
            request("1", "tools/call"),
            request("\"1\"", "prompts/list"),
        );
        let (a, b, c) = tokio::join!(peer.call(&ra), peer.call(&rb), peer.call(&rc));
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert_eq!(a.id.as_ref().unwrap().get(), "1");
        assert!(
            a.raw().get().contains(r#""method": "tools/list""#),
            "{}",
            a.raw()
        );
        assert_eq!(b.id.as_ref().unwrap().get(), "1");
        assert!(b.raw().get().contains("tools/call"), "{}", b.raw());
        assert_eq!(c.id.as_ref().unwrap().get(), "\"1\"");
        // The server saw the gateway's ids, never the clients'.
        assert!(
            a.raw().get().contains(r#""seen_id": "mcpgate-"#),
            "{}",
            a.raw()
        );
        // Its notifications went to the listener.
        let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
            .await
            .unwrap()
            .unwrap();
        // In the order written: the notification for a request came before its answer.
        assert!(String::from_utf8_lossy(&note).contains("notifications/message"));
    }

    #[tokio::test]
    async fn a_process_that_dies_fails_the_waiting_requests_at_once() {
        let peer = StdioPeer::start(&spec()).unwrap();
        let slow = request("5", "slow");
        let waiting = peer.call(&slow);
        let killer = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let die = RawValue::from_string(r#"{"jsonrpc":"2.0","method":"die"}"#.into()).unwrap();
            peer.send(&Message::parse(&die).unwrap()).await.unwrap();
        };
        let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(waiting, killer)
        })
        .await
        .expect("answered at once, not after a timeout");
        let err = result.unwrap_err();
        assert!(
            matches!(&err, PeerError::Ended(why) if why.contains('7')),
            "{err:?}"
        );
        assert!(peer.ended().is_cancelled());
        // Later requests fail the same way, without waiting.
        assert!(matches!(
            peer.call(&request("6", "x")).await,
            Err(PeerError::Ended(_))
        ));
        assert!(peer.lock_pending().is_empty());
    }

    #[tokio::test]
    async fn a_request_given_up_is_forgotten() {
        let peer = StdioPeer::start(&spec()).unwrap();
        let gave_up =
            tokio::time::timeout(Duration::from_millis(200), peer.call(&request("1", "slow")))
                .await;
        assert!(gave_up.is_err());
        assert!(peer.lock_pending().is_empty());
        assert!(peer.call(&request("2", "ping")).await.is_ok());
        // The server was told to stop working on the abandoned request (under the gateway's
        // id); answered requests are not cancelled.
        let seen = peer.call(&request("3", "cancelled")).await.unwrap();
        let seen: serde_json::Value = serde_json::from_str(seen.raw().get()).unwrap();
        assert_eq!(
            seen["result"]["cancelled"],
            serde_json::json!(["mcpgate-1"])
        );
    }
}
