//! What a hook call shows a contract-0.2 plugin: the request and the response as host resources
//! the guest reads field by field. Nothing is copied into the plugin's memory until it asks for
//! that field, so a plugin that reads the method and the tool name never pays for a large
//! message, its arguments or the headers (each string lowered costs a guest allocation and
//! dirties guest pages that a fresh instance's reset must restore).
//!
//! A view lives in the instance's resource table for one call only: [`with_views`] puts it
//! there, hands the guest a borrow, and takes it out again whatever the call did.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use wasmtime::Store;
use wasmtime::component::Resource;

use super::engine::bindings::mcpgate::plugin::types as wit;
use super::host_api::State;
use crate::mcp::{Era, Message};
use crate::pipeline::{Caller, RequestContext};

/// One request as a hook sees it (owned: a store's data outlives the borrow of the request).
pub struct RequestView {
    request_id: Arc<str>,
    route: Arc<str>,
    era: Era,
    caller: Option<Caller>,
    peer: Option<IpAddr>,
    message: Message,
    /// The headers the plugin may see, in order (credentials already left out).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl RequestView {
    /// The view of `msg`, part of `cx`'s request; `visible` decides which headers it shows.
    pub(super) fn new(
        cx: &RequestContext,
        msg: &Message,
        visible: impl Fn(&HeaderName) -> bool,
    ) -> Self {
        RequestView {
            request_id: cx.request_id.clone(),
            route: cx.upstream.name.clone(),
            era: msg.era,
            caller: cx.caller.clone(),
            peer: cx.peer,
            message: msg.clone(),
            headers: cx
                .headers
                .iter()
                .filter(|(n, _)| visible(n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
        }
    }

    /// The visible headers whose values are text, as (lower-case name, value).
    fn text_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
    }
}

/// One response as a hook sees it.
pub struct ResponseView {
    pub(super) http_status: u16,
    pub(super) streamed: bool,
    pub(super) message: String,
}

/// What a hook call is shown, in the form of the plugin's contract.
pub(super) enum Shown {
    V01(super::v01::bindings::mcpgate::plugin::types::Request),
    V02(RequestView),
}

impl Shown {
    /// `msg` (part of `cx`'s request) for a plugin built for `contract`; `visible` decides which
    /// headers it shows.
    pub(super) fn new(
        contract: super::instance::Contract,
        cx: &RequestContext,
        msg: &Message,
        visible: impl Fn(&HeaderName) -> bool,
    ) -> Shown {
        match contract {
            super::instance::Contract::V01 => Shown::V01(super::v01::request(cx, msg, visible)),
            super::instance::Contract::V02 => Shown::V02(RequestView::new(cx, msg, visible)),
        }
    }
}

/// Puts `view` in the store's table for one call; the guest gets a borrow of it
/// ([`Resource::new_borrow`] of the returned handle's rep), and [`take_back`] removes it.
pub(super) fn lend<T: Send + 'static>(
    store: &mut Store<State>,
    view: T,
) -> wasmtime::Result<Resource<T>> {
    Ok(store.data_mut().table().push(view)?)
}

/// Removes a lent view after the call (whatever the call did): a reused instance starts its
/// next call with an empty table.
pub(super) fn take_back<T: 'static>(store: &mut Store<State>, view: Resource<T>) {
    let _ = store.data_mut().table().delete(view);
}

impl wit::HostRequest for State {
    fn request_id(&mut self, r: Resource<RequestView>) -> wasmtime::Result<String> {
        Ok(self.table().get(&r)?.request_id.to_string())
    }

    fn route(&mut self, r: Resource<RequestView>) -> wasmtime::Result<String> {
        Ok(self.table().get(&r)?.route.to_string())
    }

    fn era(&mut self, r: Resource<RequestView>) -> wasmtime::Result<wit::Era> {
        Ok(match self.table().get(&r)?.era {
            Era::Legacy => wit::Era::Legacy,
            Era::Modern => wit::Era::Modern,
        })
    }

    fn caller_id(&mut self, r: Resource<RequestView>) -> wasmtime::Result<Option<String>> {
        let view = self.table().get(&r)?;
        Ok(view.caller.as_ref().map(|c| c.id.to_string()))
    }

    fn scopes(&mut self, r: Resource<RequestView>) -> wasmtime::Result<Vec<String>> {
        let view = self.table().get(&r)?;
        Ok(view
            .caller
            .as_ref()
            .map(|c| c.scopes.clone())
            .unwrap_or_default())
    }

    fn remote_addr(&mut self, r: Resource<RequestView>) -> wasmtime::Result<Option<String>> {
        Ok(self.table().get(&r)?.peer.map(|p| p.to_string()))
    }

    fn method(&mut self, r: Resource<RequestView>) -> wasmtime::Result<String> {
        Ok(self.table().get(&r)?.message.method().to_string())
    }

    fn id(&mut self, r: Resource<RequestView>) -> wasmtime::Result<Option<String>> {
        let view = self.table().get(&r)?;
        Ok(view.message.id.as_ref().map(|i| i.get().to_string()))
    }

    fn target(&mut self, r: Resource<RequestView>) -> wasmtime::Result<Option<String>> {
        let view = self.table().get(&r)?;
        Ok(view.message.target.as_deref().map(str::to_string))
    }

    fn arguments(&mut self, r: Resource<RequestView>) -> wasmtime::Result<Option<String>> {
        let view = self.table().get(&r)?;
        Ok(view.message.arguments.as_ref().map(|a| a.get().to_string()))
    }

    fn header(
        &mut self,
        r: Resource<RequestView>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        let view = self.table().get(&r)?;
        Ok(view
            .text_headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.to_string()))
    }

    fn headers(&mut self, r: Resource<RequestView>) -> wasmtime::Result<Vec<(String, String)>> {
        let view = self.table().get(&r)?;
        Ok(view
            .text_headers()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect())
    }

    fn message(&mut self, r: Resource<RequestView>) -> wasmtime::Result<String> {
        Ok(self.table().get(&r)?.message.raw().get().to_string())
    }

    /// Never reached through the contract (hooks get borrows, which the guest cannot drop);
    /// the view leaves the table when the call ends ([`take_back`]).
    fn drop(&mut self, r: Resource<RequestView>) -> wasmtime::Result<()> {
        if r.owned() {
            self.table().delete(r)?;
        }
        Ok(())
    }
}

impl wit::HostResponse for State {
    fn http_status(&mut self, r: Resource<ResponseView>) -> wasmtime::Result<u16> {
        Ok(self.table().get(&r)?.http_status)
    }

    fn streamed(&mut self, r: Resource<ResponseView>) -> wasmtime::Result<bool> {
        Ok(self.table().get(&r)?.streamed)
    }

    fn message(&mut self, r: Resource<ResponseView>) -> wasmtime::Result<String> {
        Ok(self.table().get(&r)?.message.clone())
    }

    fn drop(&mut self, r: Resource<ResponseView>) -> wasmtime::Result<()> {
        if r.owned() {
            self.table().delete(r)?;
        }
        Ok(())
    }
}
