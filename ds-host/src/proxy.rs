//! The front door: routes each request by its Host header to an appspace,
//! starts the appspace if needed, and streams the exchange with hyper's
//! HTTP/1.1 client over a pooled connection to the app (handed over by the
//! agent, or a ds-proto stream: see `app_link`). Bodies stream both ways;
//! nothing is buffered whole.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::{info_span, warn, Instrument};

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::app_link::Upstream;
use crate::appspace::{Appspace, Launcher, Lifecycle, RequestGuard, StartError};
use crate::headers;
use crate::idle_body::{IdleBody, IdleBodyError};
use crate::serve::Scheme;

/// Everything the front door needs.
#[derive(Debug)]
pub struct FrontDoor {
    /// What is served, by domain; the admin API adds and removes entries
    /// while requests are routed.
    served: std::sync::RwLock<HashMap<String, Arc<Served>>>,
    /// How to start sandboxes.
    pub launcher: Arc<Launcher>,
    /// The domain under which appspaces live (`localhost` in dev mode).
    pub base_domain: String,
    /// Start, idle and stop timing.
    pub lifecycle: Lifecycle,
}

/// One served appspace with its pool of HTTP/1.1 connections to its app
/// (see `app_link`), reused across requests like nginx's upstream
/// keepalive.
#[derive(Debug)]
struct Served {
    appspace: Arc<Appspace>,
    client: PooledClient,
}

type PooledClient = hyper_util::client::legacy::Client<ChannelConnector, Body>;

impl FrontDoor {
    /// A front door serving nothing yet.
    pub fn new(launcher: Launcher, base_domain: String, lifecycle: Lifecycle) -> Self {
        Self {
            served: std::sync::RwLock::default(),
            launcher: Arc::new(launcher),
            base_domain,
            lifecycle,
        }
    }

    /// Serves `appspace` at its domain (replacing what was there).
    pub fn add(&self, appspace: Arc<Appspace>) {
        let connector = ChannelConnector {
            appspace: appspace.clone(),
            launcher: self.launcher.clone(),
            lifecycle: self.lifecycle,
        };
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build(connector);
        let domain = appspace.config.domain.to_ascii_lowercase();
        self.served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domain, Arc::new(Served { appspace, client }));
    }

    /// Stops serving the appspace whose domain or name is `key`; returns it.
    pub fn remove(&self, key: &str) -> Option<Arc<Appspace>> {
        let mut served = self.served.write().unwrap_or_else(|p| p.into_inner());
        let domain = served
            .iter()
            .find(|(d, s)| *d == key || s.appspace.config.name == key)
            .map(|(d, _)| d.clone())?;
        served.remove(&domain).map(|s| s.appspace.clone())
    }

    /// The appspace whose domain or name is `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Appspace>> {
        let served = self.served.read().unwrap_or_else(|p| p.into_inner());
        served
            .get(key)
            .or_else(|| served.values().find(|s| s.appspace.config.name == key))
            .map(|s| s.appspace.clone())
    }

    /// Every appspace served.
    pub fn all(&self) -> Vec<Arc<Appspace>> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.appspace.clone())
            .collect()
    }
}

/// Opens connections to an appspace's app (starting the sandbox if
/// needed): handed over by the agent, else a stream on the channel.
#[derive(Clone)]
struct ChannelConnector {
    appspace: Arc<Appspace>,
    launcher: Arc<Launcher>,
    lifecycle: Lifecycle,
}

impl tower::Service<axum::http::Uri> for ChannelConnector {
    type Response = ChannelIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<ChannelIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: axum::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let link = this.appspace.link(&this.launcher, &this.lifecycle).await?;
            Ok(ChannelIo(TokioIo::new(link.connect().await?)))
        })
    }
}

/// A connection to the app (handed over, or a channel stream) as a pooled
/// client connection.
struct ChannelIo(TokioIo<Upstream>);

impl hyper_util::client::legacy::connect::Connection for ChannelIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for ChannelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ChannelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until the
/// last byte has gone out, and is cut off when it stops moving.
struct GuardedBody {
    inner: IdleBody<Incoming>,
    _guard: RequestGuard,
}

impl HttpBody for GuardedBody {
    type Data = bytes::Bytes;
    type Error = IdleBodyError<hyper::Error>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl FrontDoor {
    /// What a Host header names, if anything.
    fn route(&self, host: &str) -> Option<Arc<Served>> {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&host)
            .cloned()
    }
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

/// The axum handler for every request.
pub async fn handle(
    State(door): State<Arc<FrontDoor>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("")
        .to_owned();
    let Some(served) = door.route(&host) else {
        return page(
            StatusCode::NOT_FOUND,
            "No such appspace",
            &format!("Nothing is served at {host}."),
        );
    };
    let scheme = req
        .extensions()
        .get::<Scheme>()
        .copied()
        .unwrap_or(Scheme::Http);
    let appspace = &served.appspace;
    let span = info_span!("request", appspace = %appspace.config.name, method = %req.method(), path = %req.uri().path());
    let mut resp = forward(&door, &served, peer, &host, scheme, req)
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
    door: &FrontDoor,
    served: &Served,
    peer: SocketAddr,
    host: &str,
    scheme: Scheme,
    mut req: Request<Body>,
) -> Response<Body> {
    let appspace = &served.appspace;
    let guard = appspace.begin_request();
    let link = match appspace.link(&door.launcher, &door.lifecycle).await {
        Ok(link) => link,
        Err(StartError::Paused) => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Appspace paused",
                "Its administrator paused it; it serves nothing until resumed.",
            );
        }
        Err(e) => {
            warn!(error = %e, "appspace failed to start");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Appspace unavailable",
                &format!("It could not be started: {e}."),
            );
        }
    };
    let bad_gateway = |what: &str, e: &dyn std::fmt::Display| {
        warn!(error = %e, "{what}");
        page(
            StatusCode::BAD_GATEWAY,
            "Appspace error",
            &format!("{what}: {e}."),
        )
    };
    // Protocol upgrades (WebSocket): the only hop-by-hop headers passed on.
    let upgrade = requested_upgrade(req.headers());
    let proto = if scheme == Scheme::Https {
        "https"
    } else {
        "http"
    };
    if upgrade.is_none() {
        // The usual case: a pooled connection, absolute-form URI naming the
        // appspace (the pool's key); the browser's Host header is kept.
        drop(link);
        headers::to_app(req.headers_mut(), &peer.ip().to_string(), proto, host);
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        match format!("http://{}{path}", appspace.config.name).parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return bad_gateway("building the request", &e),
        }
        // The upload is cut off if it stalls; the app must start its
        // answer within the response timeout.
        let idle = door.lifecycle.body_idle_timeout;
        let req = req.map(|b| Body::new(IdleBody::new(b, idle)));
        let answer =
            tokio::time::timeout(door.lifecycle.response_timeout, served.client.request(req));
        return match answer.await {
            Ok(Ok(resp)) => to_browser(resp, guard, idle),
            Ok(Err(e)) => bad_gateway("the app did not answer", &e),
            Err(_) => {
                warn!("the app did not answer in time");
                page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Appspace timeout",
                    &format!(
                        "The app did not answer within {:?}.",
                        door.lifecycle.response_timeout
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
            warn!(error = %e, "connection to the appspace failed");
        }
    });
    let browser_side = upgrade
        .as_ref()
        .and_then(|_| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>());
    let proto = if scheme == Scheme::Https {
        "https"
    } else {
        "http"
    };
    headers::to_app(req.headers_mut(), &peer.ip().to_string(), proto, host);
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
        tokio::spawn(async move {
            let _in_flight = guard; // the connection counts until it closes
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
    to_browser(resp, guard, door.lifecycle.body_idle_timeout)
}

/// An app's response on its way out: header policy applied, and the
/// request counted in flight until the body's last byte.
fn to_browser(resp: Response<Incoming>, guard: RequestGuard, idle: Duration) -> Response<Body> {
    let mut resp = resp.map(|inner| {
        Body::new(GuardedBody {
            inner: IdleBody::new(inner, idle),
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
