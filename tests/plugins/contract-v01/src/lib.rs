//! A test fixture built for plugin contract 0.1 (`wit/0.1/mcpgate-plugin.wit`) with wit-bindgen
//! directly: the SDK builds for the current contract, and a gateway that moved on must still
//! run plugins built for the previous one. It reports every field of the 0.1 request record it
//! was handed (in a header the upstream receives), refuses the tool `forbidden`, logs, and
//! replaces results with what it saw of the response record (unless configured with
//! `requests_only: true`).

#[allow(unsafe_code, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/0.1",
        world: "plugin",
    });
}

use bindings::exports::mcpgate::plugin::hooks::Guest;
use bindings::mcpgate::plugin::log;
use bindings::mcpgate::plugin::types::{
    Era, JsonrpcError, Modification, Registration, Rejection, Request, RequestAction, Response,
    ResponseAction,
};

struct V01;

fn header<'a>(req: &'a Request, name: &str) -> &'a str {
    req.headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("-", |(_, v)| v.as_str())
}

impl Guest for V01 {
    fn init(config: String) -> Result<Registration, String> {
        if config.contains("\"refuse\"") {
            return Err("this 0.1 plugin refuses its config".into());
        }
        // `{"requests_only": true}`: leave responses alone (a client SDK then reads the
        // upstream's own results).
        let responses = if config.contains("\"requests_only\":true") {
            vec![]
        } else {
            vec!["tools/call".into()]
        };
        Ok(Registration {
            request_methods: vec!["tools/call".into()],
            response_methods: responses,
        })
    }

    fn on_request(req: Request) -> RequestAction {
        log::log(log::Level::Info, &format!("0.1 plugin saw {}", req.method));
        if req.target.as_deref() == Some("forbidden") {
            return RequestAction::Reject(Rejection {
                http_status: 200,
                error: JsonrpcError {
                    code: -32050,
                    message: format!(
                        "the 0.1 plugin refuses `forbidden` for {}",
                        req.caller.id.as_deref().unwrap_or("anonymous")
                    ),
                    data: Some(r#"{"contract":"0.1"}"#.into()),
                },
            });
        }
        let era = match req.era {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        };
        let saw = format!(
            "method={} target={} id={} era={era} route={} args={} tenant={} caller={} scopes={} addr={} headers={} message-bytes={} hidden-auth={} request-id-set={}",
            req.method,
            req.target.as_deref().unwrap_or("-"),
            req.id.as_deref().unwrap_or("-"),
            req.route,
            req.arguments
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(100)
                .collect::<String>(),
            header(&req, "x-tenant"),
            req.caller.id.as_deref().unwrap_or("-"),
            req.caller.scopes.join(","),
            req.caller.remote_addr.as_deref().unwrap_or("-"),
            req.headers.len(),
            req.message.len(),
            header(&req, "authorization") == "-",
            !req.request_id.is_empty(),
        );
        RequestAction::Modify(Modification {
            arguments: None,
            message: None,
            set_headers: vec![("x-v01-saw".into(), saw)],
            remove_headers: vec![],
        })
    }

    fn on_response(resp: Response) -> ResponseAction {
        let id = resp.request.id.as_deref().unwrap_or("null");
        ResponseAction::ReplaceResult(format!(
            r#"{{"v01":{{"status":{},"streamed":{},"request-id":{id},"message-bytes":{}}}}}"#,
            resp.http_status,
            resp.streamed,
            resp.message.len()
        ))
    }
}

bindings::export!(V01 with_types_in bindings);
