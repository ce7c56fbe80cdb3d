//! The admin API client: HTTP/1.1 over the host's Unix socket (hyper),
//! one connection per command.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ds_api::admin::ErrorBody;
use futures::{StreamExt, TryStreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("ds-host is not running (nothing answers on {0}; pass --socket PATH if it listens elsewhere)")]
    NotRunning(PathBuf),
    /// The socket may not be opened by this user.
    #[error("permission denied opening {0}: the admin API is for root, the host's user and the admin group")]
    Denied(PathBuf),
    /// Connecting failed otherwise.
    #[error("connecting to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The host answered with an error.
    #[error("{}", .0.error.message)]
    Api(ErrorBody),
    /// The exchange itself failed.
    #[error("talking to ds-host: {0}")]
    Http(String),
    /// Reading a local file failed.
    #[error("{what} {path}: {source}")]
    Local {
        /// What we were doing.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A package was refused by the validation `app install` runs.
    #[error("{path}: {source}")]
    Package {
        /// The package.
        path: PathBuf,
        /// Why.
        source: ds_package::InstallError,
    },
}

/// How long a streamed upload waits for the host's `100 Continue` before
/// sending anyway (RFC 9110 lets a client go on after a while).
const CONTINUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A client of the admin socket at one path.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

fn http(e: impl std::fmt::Display) -> ClientError {
    ClientError::Http(e.to_string())
}

impl Client {
    /// A client of `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// Sends one request and returns the response with its body unread;
    /// an error status becomes [`ClientError::Api`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Response<Incoming>, ClientError> {
        let body = body.map(|(content_type, bytes)| {
            let length = bytes.len() as u64;
            let body = Full::new(bytes).map_err(|never| match never {}).boxed();
            (content_type, length, body)
        });
        self.send_body(method, path, body, None).await
    }

    /// [`Client::send`] with the file at `file` as the body, read as it
    /// is sent (an export may be larger than memory).
    pub async fn send_file(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        file: &Path,
    ) -> Result<Response<Incoming>, ClientError> {
        let local = |what| {
            move |source| ClientError::Local {
                what,
                path: file.to_owned(),
                source,
            }
        };
        let opened = tokio::fs::File::open(file)
            .await
            .map_err(local("reading"))?;
        let length = opened.metadata().await.map_err(local("reading"))?.len();
        // `Expect: 100-continue`: the body waits for the host's go-ahead,
        // so a refusal before it reads anything (a taken domain) arrives
        // as an answer, not as a failed write on a closed connection.
        let (go, gone_ahead) = tokio::sync::oneshot::channel::<()>();
        let wait = futures::stream::once(async move {
            let _ = tokio::time::timeout(CONTINUE_WAIT, gone_ahead).await;
        })
        .filter_map(|()| std::future::ready(None::<std::io::Result<Frame<Bytes>>>));
        let frames =
            tokio_util::io::ReaderStream::with_capacity(opened, 256 << 10).map_ok(Frame::data);
        let body = BodyExt::boxed(StreamBody::new(wait.chain(frames)));
        self.send_body(method, path, Some((content_type, length, body)), Some(go))
            .await
    }

    async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, u64, BoxBody<Bytes, std::io::Error>)>,
        on_continue: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.socket.clone())
                }
                std::io::ErrorKind::PermissionDenied => ClientError::Denied(self.socket.clone()),
                _ => ClientError::Connect {
                    path: self.socket.clone(),
                    source: e,
                },
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "ds-host");
        let payload = match body {
            Some((content_type, length, body)) => {
                req = req
                    .header(hyper::header::CONTENT_TYPE, content_type)
                    .header(hyper::header::CONTENT_LENGTH, length);
                body
            }
            None => Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        };
        if on_continue.is_some() {
            req = req.header(hyper::header::EXPECT, "100-continue");
        }
        let mut request = req.body(payload).map_err(http)?;
        if let Some(go) = on_continue {
            let go = std::sync::Mutex::new(Some(go));
            hyper::ext::on_informational(&mut request, move |res| {
                if res.status() == hyper::StatusCode::CONTINUE {
                    if let Some(go) = go.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        let _ = go.send(());
                    }
                }
            });
        }
        let resp = sender.send_request(request).await.map_err(http)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ClientError::Api(body),
            Err(_) => ClientError::Http(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&bytes).trim()
            )),
        })
    }

    /// Sends a request and decodes the JSON answer, also returning it raw
    /// (for `--json`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(T, serde_json::Value), ClientError> {
        decoded(self.send(method, path, body).await?).await
    }

    /// [`Client::call`] with a file streamed as the body.
    pub async fn call_file<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        file: &Path,
    ) -> Result<(T, serde_json::Value), ClientError> {
        decoded(self.send_file(method, path, content_type, file).await?).await
    }

    /// [`Client::call`] with a JSON body.
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<(T, serde_json::Value), ClientError> {
        let bytes = serde_json::to_vec(body).map_err(http)?;
        self.call(method, path, Some(("application/json", bytes.into())))
            .await
    }
}

/// The JSON answer of `resp`, typed and raw.
async fn decoded<T: DeserializeOwned>(
    resp: Response<Incoming>,
) -> Result<(T, serde_json::Value), ClientError> {
    let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
    let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(http)?;
    let typed = serde_json::from_value(raw.clone()).map_err(http)?;
    Ok((typed, raw))
}
