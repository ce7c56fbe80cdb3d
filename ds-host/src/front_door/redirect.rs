//! Plain HTTP in production only says "use HTTPS": a permanent redirect
//! to the same host and path on the HTTPS port.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};

/// The handler of a plain-HTTP listener that redirects to `https_port`.
pub(crate) fn handler(https_port: u16) -> super::serve::Handler {
    Arc::new(move |req, _| Box::pin(std::future::ready(to_https(&req, https_port))))
}

/// Plain HTTP in production only says "use HTTPS".
fn to_https(req: &Request<Body>, https_port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        let mut bad = Response::new(Body::from("a valid Host header is required\n"));
        *bad.status_mut() = StatusCode::BAD_REQUEST;
        return bad;
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = format!("https://{name}{port}{path}").parse() {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}
