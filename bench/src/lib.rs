//! What the benchmark's two servers (`bench-upstream`, `floor-proxy`) share: serving plain hyper
//! on a free loopback port, `TCP_NODELAY` on every connection, HTTP/1.1 and HTTP/2.

pub mod client;
pub mod procs;

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Binds 127.0.0.1:0, prints `PORT <n>` (the drivers wait for it), and serves `handle` on every
/// connection until the process ends, on the caller's runtime.
pub async fn serve<H, F, B>(handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    accept_loop(listener, handle).await
}

/// Serves `handle` on every connection `listener` accepts, forever.
async fn accept_loop<H, F, B>(listener: tokio::net::TcpListener, handle: H) -> !
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// [`serve`] as `mcpgate start` serves: `workers` threads, each a single-threaded runtime
/// accepting on the same listener, each with the handler `make` builds on it (its own client
/// pool). Never returns.
pub fn serve_on_workers<M, H, F, B>(workers: usize, make: M)
where
    M: Fn() -> H + Send + Sync + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    let make = std::sync::Arc::new(make);
    let threads: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let listener = listener.try_clone().unwrap();
            let make = make.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    accept_loop(listener, make()).await
                })
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
