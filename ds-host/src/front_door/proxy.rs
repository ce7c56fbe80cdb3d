//! The front door: routes each request by its Host header to an appspace,
//! starts the appspace if needed, and streams the exchange with hyper's
//! HTTP/1.1 client over a pooled connection to the app (handed over by the
//! agent, or a ds-proto stream: see `app_link`). Bodies stream both ways;
//! nothing is buffered whole.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::{debug_span, warn, Instrument};

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::door::Door;
use super::headers;
use super::idle_body::{IdleBody, IdleBodyError};
use super::routes::{RequestGuard, Route};
use super::serve::{Client, Scheme};
use super::upstream_pool::Lease;
use crate::front_link::messages::Refusal;

/// A response body that keeps its request counted as in flight until the
/// last byte has gone out, is cut off when it stops moving, and gives its
/// connection back to the pool once read to the end.
struct GuardedBody {
    inner: IdleBody<Incoming>,
    lease: Option<Lease>,
    _guard: RequestGuard,
}

impl GuardedBody {
    fn release_if_done(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(mut lease) = self.lease.take() {
                lease.finished();
            }
        }
    }
}

impl Drop for GuardedBody {
    // hyper drops a body it knows is empty (Content-Length: 0, HEAD)
    // without polling it.
    fn drop(&mut self) {
        self.release_if_done();
    }
}

impl HttpBody for GuardedBody {
    type Data = bytes::Bytes;
    type Error = IdleBodyError<hyper::Error>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => {
                if let Some(mut lease) = self.lease.take() {
                    lease.finished();
                }
            }
            Poll::Ready(Some(Ok(_))) => self.release_if_done(),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The domain a Host header names: without a port, a trailing dot, or
/// upper case.
fn domain_of(host: &str) -> String {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn page(status: StatusCode, title: &str, detail: &str) -> Response<Body> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let html = format!(
        "<!doctype html><title>{0}</title><h1>{0}</h1><p>{1}</p>\n",
        esc(title),
        esc(detail)
    );
    let mut resp = Response::new(Body::from(html));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/html; charset=utf-8".parse().expect("static"),
    );
    headers::to_browser(resp.headers_mut());
    resp
}

/// The front door's [`super::serve::Handler`]: every request, proxied.
pub fn handler(door: Arc<Door>) -> super::serve::Handler {
    Arc::new(move |req, client| Box::pin(handle(door.clone(), req, client)))
}

/// Serves one request from `client`.
pub async fn handle(door: Arc<Door>, req: Request<Body>, client: Arc<Client>) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("")
        .to_owned();
    let scheme = client.scheme;
    let Some(appspace) = door.routes.at_domain(&domain_of(&host)) else {
        return page(
            StatusCode::NOT_FOUND,
            "No such appspace",
            &format!("Nothing is served at {host}."),
        );
    };
    // The request's own span (method, path) is made at debug level only:
    // making a span with fields cost ~8% of the host's instructions per
    // proxied request. At the default level the request's lines carry its
    // appspace's span, and its warnings name the request themselves.
    let request_span = debug_span!(
        parent: appspace.span(),
        "request",
        method = req.method().as_str(),
        path = req.uri().path()
    );
    let span = if request_span.is_disabled() {
        appspace.span().clone()
    } else {
        request_span
    };
    let mut resp = forward(&door, &appspace, &client, &host, req)
        .instrument(span)
        .await;
    if scheme == Scheme::Https {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    resp
}

async fn forward(
    door: &Door,
    appspace: &Arc<Route>,
    client: &Client,
    host: &str,
    mut req: Request<Body>,
) -> Response<Body> {
    // A stopping host starts nothing and answers what still arrives on
    // open keep-alive connections with a 503 (and closes them).
    if door.routes.is_stopping() {
        let mut resp = page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Shutting down",
            "The host is stopping; try again in a moment.",
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let guard = appspace.begin_request();
    // What the warnings below name (sharing the request's bytes).
    let (method, target) = (req.method().clone(), req.uri().clone());
    let path = target.path();
    let link = match door.link(appspace).await {
        Ok(link) => link,
        Err(e) if e.refusal == Refusal::Paused => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Appspace paused",
                "Its administrator paused it; it serves nothing until resumed.",
            );
        }
        Err(e) => {
            warn!(%method, path, error = %e.reason, "appspace failed to start");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Appspace unavailable",
                &format!("It could not be started: {}.", e.reason),
            );
        }
    };
    let timing = door.routes.timing;
    let bad_gateway = |what: &str, e: &dyn std::fmt::Display| {
        warn!(%method, path, error = %e, "{what}");
        page(
            StatusCode::BAD_GATEWAY,
            "Appspace error",
            &format!("{what}: {e}."),
        )
    };
    // Protocol upgrades (WebSocket): the only hop-by-hop headers passed on.
    let upgrade = requested_upgrade(req.headers());
    let forwarding = match forwarding(client, &req, host) {
        Ok(f) => f,
        Err(e) => return bad_gateway("building the request", &e),
    };
    if upgrade.is_none() {
        // The usual case: a pooled keep-alive connection; the browser's
        // Host header is kept.
        headers::to_app(req.headers_mut(), forwarding);
        if let Err(e) = to_origin_form(&mut req, host) {
            return bad_gateway("building the request", &e);
        }
        // The upload is cut off if it stalls; the app must start its
        // answer within the response timeout.
        let idle = timing.body_idle_timeout;
        let req = req.map(|b| Body::new(IdleBody::new(b, idle)));
        let answer = tokio::time::timeout(
            timing.response_timeout,
            appspace.pool.send(link.id(), || link.connect(), req),
        );
        return match answer.await {
            Ok(Ok((resp, lease))) => to_browser(resp, guard, idle, Some(lease)),
            Ok(Err(e)) => bad_gateway("the app did not answer", &e),
            Err(_) => {
                warn!(%method, path, "the app did not answer in time");
                page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Appspace timeout",
                    &format!(
                        "The app did not answer within {:?}.",
                        timing.response_timeout
                    ),
                )
            }
        };
    }
    let stream = match link.connect().await {
        Ok(s) => s,
        Err(e) => return bad_gateway("connecting to the app", &e),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return bad_gateway("talking to the appspace", &e),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            warn!(error = %e, "connection to the app failed");
        }
    });
    let browser_side = upgrade
        .as_ref()
        .and_then(|_| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>());
    headers::to_app(req.headers_mut(), forwarding);
    if let Some(protocol) = &upgrade {
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(header::UPGRADE, protocol.clone());
    }
    let mut resp = match sender.send_request(req).await {
        Ok(resp) => resp,
        Err(e) => return bad_gateway("the app did not answer", &e),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(browser_side), Some(protocol)) = (browser_side, upgrade) else {
            return bad_gateway("the app switched protocols unasked", &"refused");
        };
        let app_side = hyper::upgrade::on(&mut resp);
        let mut switched = Response::new(Body::empty());
        *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *switched.headers_mut() = resp.headers().clone();
        headers::to_browser(switched.headers_mut());
        switched
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        switched.headers_mut().insert(header::UPGRADE, protocol);
        let worker_load = super::conn_workers::count_on_this_worker();
        tokio::spawn(async move {
            let _in_flight = guard; // the connection counts until it closes
            let _worker_load = worker_load; // and so does the worker's load
            match tokio::try_join!(browser_side, app_side) {
                Ok((browser, app)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(browser),
                        &mut TokioIo::new(app),
                    )
                    .await;
                }
                Err(e) => warn!(error = %e, "protocol upgrade failed"),
            }
        });
        return switched;
    }
    to_browser(resp, guard, timing.body_idle_timeout, None)
}

/// What the host tells the app about where `req` came from: the browser's
/// own Host header when it sent one (shared, not copied), else `host`.
fn forwarding(
    client: &Client,
    req: &Request<Body>,
    host: &str,
) -> Result<headers::Forwarding, String> {
    let host = match req.headers().get(header::HOST) {
        Some(value) => value.clone(),
        None => HeaderValue::from_str(host).map_err(|e| format!("host {host}: {e}"))?,
    };
    Ok(headers::Forwarding {
        client_ip: client.ip_header.clone(),
        proto: HeaderValue::from_static(match client.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }),
        host,
    })
}

/// Makes the request's target origin-form (`/path?query`), as an app
/// expects from its proxy, and gives it a Host header if the browser sent
/// an absolute-form target without one.
fn to_origin_form(req: &mut Request<Body>, host: &str) -> Result<(), String> {
    if req.uri().scheme().is_none() && req.uri().authority().is_none() {
        return Ok(());
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path.parse().map_err(|e| format!("target {path}: {e}"))?;
    if !req.headers().contains_key(header::HOST) {
        let host = HeaderValue::from_str(host).map_err(|e| format!("host {host}: {e}"))?;
        req.headers_mut().insert(header::HOST, host);
    }
    Ok(())
}

/// An app's response on its way out: header policy applied, the request
/// counted in flight until the body's last byte, and the pooled
/// connection (if any) given back then.
fn to_browser(
    resp: Response<Incoming>,
    guard: RequestGuard,
    idle: Duration,
    lease: Option<Lease>,
) -> Response<Body> {
    let mut resp = resp.map(|inner| {
        Body::new(GuardedBody {
            inner: IdleBody::new(inner, idle),
            lease,
            _guard: guard,
        })
    });
    headers::to_browser(resp.headers_mut());
    resp
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` plus an
/// `Upgrade` header), if any.
fn requested_upgrade(h: &axum::http::HeaderMap) -> Option<HeaderValue> {
    let wants = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants.then(|| h.get(header::UPGRADE).cloned()).flatten()
}
