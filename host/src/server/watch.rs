//! `server.watch_config`: reload when a file the serving config was built from changes — the
//! config file, a plugin's component, the TLS certificate or key. Polled (a `stat` per file
//! every [`POLL`]; no inotify, which misses files replaced by rename on some volumes) and
//! debounced: a reload starts once the files have stopped changing for [`SETTLE`], so an editor's
//! or a deploy tool's several writes make one reload. A refused reload is not retried until a file
//! changes again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Gateway;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_millis(500);
/// How long they must stay unchanged before the reload.
pub const SETTLE: Duration = Duration::from_millis(300);

/// What a file looked like: modification time and length (`None`: missing or unreadable).
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// The files the serving config was built from.
fn watched(gateway: &Gateway) -> Vec<PathBuf> {
    let config = gateway.config();
    let mut files: Vec<PathBuf> = gateway
        .reloads
        .source()
        .map(|s| s.path.clone())
        .into_iter()
        .collect();
    files.extend(config.plugins.iter().map(|p| p.file.clone()));
    if let Some(tls) = &config.server.tls {
        files.push(tls.cert.clone());
        files.push(tls.key.clone());
    }
    files
}

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            let seen = std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f.clone(), seen)
        })
        .collect()
}

/// Watches until the gateway drains. Runs whatever `server.watch_config` says, and reloads only
/// while the serving config has it on (so a reload can turn watching on or off).
pub async fn watch_files(gateway: Arc<Gateway>) {
    let shutdown = gateway.shutdown_token();
    let mut last = fingerprint(&watched(&gateway));
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = shutdown.cancelled() => return,
        }
        let files = watched(&gateway);
        let now = fingerprint(&files);
        if now == last {
            continue;
        }
        // Changed: wait until it settles (a write in progress, several files in turn).
        let mut settled = now;
        loop {
            tokio::time::sleep(SETTLE).await;
            let again = fingerprint(&files);
            if again == settled {
                break;
            }
            settled = again;
        }
        if gateway.config().server.watch_config {
            let changed: Vec<String> = settled
                .iter()
                .filter(|entry| !last.contains(entry))
                .map(|(f, _)| f.display().to_string())
                .collect();
            tracing::info!(files = ?changed, "watched files changed: reloading");
            gateway.reload("watch").await;
        }
        // What the (new) serving config watches, as it is now.
        last = fingerprint(&watched(&gateway));
    }
}
