//! `GET /v1/flows` on the agent's HTTP port (the one of `/metrics`): the
//! node's flows as JSON lines ([`super::json`]), for clients that reach
//! the agent through the API server's pod proxy, which speaks HTTP/1.1 and
//! so cannot carry the gRPC API. The query is parsed into the Observer
//! API's own filter and served by the same code (`observer::events`):
//!
//! | parameter | filter |
//! |---|---|
//! | `verdict=FORWARDED\|DROPPED` | the verdict (repeatable) |
//! | `from_namespace=NS`, `from_pod=[NS/]NAME` | the client pod (a name is a prefix) |
//! | `to_namespace=NS`, `to_service=[NS/]NAME` | the Service asked for |
//! | `since=RFC3339` | flows at or after then |
//! | `limit=N` | the newest N (default and 0: all kept) |
//! | `follow=true` | then each new flow, streamed, until the client goes |
//!
//! An unknown parameter or a bad value is a 400 naming it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Response, StatusCode};
use switchyard_daemon::{Body, full};
use tracing::debug;

use super::convert;
use super::filter::Filters;
use super::json::{flow_line, lost_line};
use super::proto::flow as pb;
use super::{Event, events};
use crate::flows::reader::FlowHub;

/// The path served.
pub const PATH: &str = "/v1/flows";

/// What a `/v1/flows` request asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowsQuery {
    pub filter: pb::FlowFilter,
    pub limit: usize,
    pub follow: bool,
    pub since: Option<SystemTime>,
}

/// `%XX` and `+` decoded.
fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.ok_or_else(|| format!("bad escape in {s:?}"))?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

/// `[NS/]NAME`, in `ns` when it names none.
fn qualified(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) if !name.contains('/') => format!("{ns}/{name}"),
        _ => name.to_owned(),
    }
}

fn verdict(v: &str) -> Result<i32, String> {
    match pb::Verdict::from_str_name(&v.to_ascii_uppercase()) {
        Some(v @ (pb::Verdict::Forwarded | pb::Verdict::Dropped)) => Ok(v as i32),
        _ => Err(format!("verdict {v:?}: FORWARDED or DROPPED")),
    }
}

fn since(v: &str) -> Result<SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(SystemTime::from)
        .map_err(|e| format!("since {v:?}: not an RFC 3339 time ({e})"))
}

/// Parses a query string (pure).
pub fn parse(query: &str) -> Result<FlowsQuery, String> {
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((unescape(k)?, unescape(v)?));
    }
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let (from_ns, to_ns) = (get("from_namespace"), get("to_namespace"));
    let mut q = FlowsQuery::default();
    for (k, v) in &params {
        match k.as_str() {
            "verdict" => q.filter.verdict.push(verdict(v)?),
            "from_pod" => q.filter.source_pod.push(qualified(from_ns, v)),
            "to_service" => q.filter.destination_service.push(qualified(to_ns, v)),
            "from_namespace" | "to_namespace" => {}
            "since" => q.since = Some(since(v)?),
            "limit" => q.limit = v.parse().map_err(|_| format!("limit {v:?}: not a count"))?,
            "follow" => q.follow = v.is_empty() || v == "true" || v == "1",
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    // A namespace alone: all of it.
    if let (Some(ns), true) = (from_ns, q.filter.source_pod.is_empty()) {
        q.filter.source_pod.push(format!("{ns}/"));
    }
    if let (Some(ns), true) = (to_ns, q.filter.destination_service.is_empty()) {
        q.filter.destination_service.push(format!("{ns}/"));
    }
    Ok(q)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}

/// The response to `GET /v1/flows?query` for `node`'s flows.
pub fn respond(hub: &FlowHub, node: &Arc<str>, query: Option<&str>) -> Response<Body> {
    let q = match parse(query.unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let filters = match Filters::new(std::slice::from_ref(&q.filter), &[]) {
        Ok(f) => f.since(q.since),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    debug!(?q, "flows asked over HTTP");
    let node = node.clone();
    let lines = events(hub, filters, q.limit, q.follow).map(move |e| {
        let line = match e {
            Event::Flow(f) => flow_line(&convert::flow(&f, &node), &node),
            Event::Lost(source, n) => {
                lost_line(source, n, &node, &convert::timestamp(SystemTime::now()))
            }
        };
        Ok::<_, Infallible>(Frame::data(Bytes::from(line)))
    });
    let mut r = Response::new(StreamBody::new(lines).boxed_unsync());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn queries_become_the_observer_apis_filter() {
        let q = parse(
            "verdict=DROPPED&from_namespace=app&to_service=shop%2Fcart&limit=5&since=2026-12-06T15:00:00Z",
        )
        .unwrap();
        assert_eq!(q.filter.verdict, [pb::Verdict::Dropped as i32]);
        assert_eq!(q.filter.source_pod, ["app/"]);
        assert_eq!(q.filter.destination_service, ["shop/cart"]);
        assert_eq!((q.limit, q.follow), (5, false));
        let t = q.since.unwrap().duration_since(SystemTime::UNIX_EPOCH);
        assert_eq!(t.unwrap().as_secs(), 1_796_569_200);
        // A name joins its namespace; a qualified one keeps its own.
        let q =
            parse("from_namespace=app&from_pod=client&to_namespace=db&to_service=x/y&follow=true")
                .unwrap();
        assert_eq!(q.filter.source_pod, ["app/client"]);
        assert_eq!(q.filter.destination_service, ["x/y"]);
        assert!(q.follow);
        let q = parse("to_namespace=db&verdict=forwarded&verdict=DROPPED").unwrap();
        assert_eq!(q.filter.destination_service, ["db/"]);
        assert_eq!(q.filter.verdict.len(), 2);
        assert_eq!(parse("").unwrap(), FlowsQuery::default());
    }

    #[test]
    fn bad_queries_name_what_is_wrong() {
        for (q, says) in [
            ("verdict=AUDIT", "verdict"),
            ("limit=-1", "limit"),
            ("since=yesterday", "since"),
            ("to_servce=a/b", "to_servce"),
            ("from_pod=%zz", "escape"),
        ] {
            let e = parse(q).unwrap_err();
            assert!(e.contains(says), "{q}: {e}");
        }
    }
}
