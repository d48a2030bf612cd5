//! The floor for one proxy hop: a plain hyper reverse proxy with the same client stack as
//! mcpgate (hyper-util's pooled client, TCP_NODELAY) and nothing else: no parsing, no stages,
//! bodies streamed both ways, frame by frame.
//!
//!   floor-proxy <upstream base URL, e.g. http://127.0.0.1:3001> [--workers N]
//!
//! By default it runs on tokio's work-stealing runtime (`#[tokio::main]`), the plain hyper
//! setup. With `--workers N` it runs as `mcpgate start` does: N threads, each a single-threaded
//! runtime with its own client pool, so the two can be compared runtime for runtime.
//!
//! Prints `PORT <n>` once listening; every request's path is forwarded to the upstream.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Body = BoxBody<Bytes, hyper::Error>;

async fn forward(
    client: Client<HttpConnector, Incoming>,
    base: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = format!("{base}{path}").parse::<Uri>().unwrap();
    req.headers_mut().remove(http::header::HOST);
    Ok(match client.request(req).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(e) => Response::builder()
            .status(502)
            .body(
                http_body_util::Full::new(Bytes::from(e.to_string()))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap(),
    })
}

fn client() -> Client<HttpConnector, Incoming> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(http)
}

fn main() {
    let usage = "usage: floor-proxy <upstream base URL> [--workers N]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let base: &'static str = args
        .first()
        .expect(usage)
        .trim_end_matches('/')
        .to_string()
        .leak();
    let workers = match args.get(1).map(String::as_str) {
        None => None,
        Some("--workers") => Some(args.get(2).and_then(|n| n.parse().ok()).expect(usage)),
        Some(_) => panic!("{usage}"),
    };
    match workers {
        Some(n) => mcpgate_bench::serve_on_workers(n, move || {
            let client = client();
            move |req| forward(client.clone(), base, req)
        }),
        None => tokio::runtime::Runtime::new().unwrap().block_on(async {
            let client = client();
            mcpgate_bench::serve(move |req| forward(client.clone(), base, req)).await;
        }),
    }
}
