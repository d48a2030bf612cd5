//! The floor for one proxy hop: a plain hyper reverse proxy with the same client stack as
//! mcpgate (hyper-util's pooled client, TCP_NODELAY) and nothing else: no parsing, no stages,
//! bodies streamed both ways, frame by frame.
//!
//!   floor-proxy <upstream base URL, e.g. http://127.0.0.1:3001>
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

#[tokio::main]
async fn main() {
    let base: &'static str = std::env::args()
        .nth(1)
        .expect("usage: floor-proxy <upstream base URL>")
        .trim_end_matches('/')
        .to_string()
        .leak();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(http);
    mcpgate_bench::serve(move |req| forward(client.clone(), base, req)).await;
}
