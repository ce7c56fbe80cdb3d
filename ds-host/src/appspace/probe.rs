//! Asking a running app whether it works: one GET of a path over the
//! sandbox's channel (an inbound HTTP stream the agent splices to the
//! app), so the supervisor reaches the app without the front door and
//! while the appspace is still out of service to it.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::Appspace;

/// Why the app was found not working.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Its sandbox is not running.
    #[error("its sandbox is not running")]
    NotRunning,
    /// The exchange failed.
    #[error("GET {path} failed: {why}")]
    Exchange {
        /// The path.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// It answered with a server error.
    #[error("GET {path} answered {status}")]
    ServerError {
        /// The path.
        path: String,
        /// The status.
        status: u16,
    },
    /// It did not answer in time.
    #[error("GET {path} got no answer within {timeout:?}")]
    Timeout {
        /// The path.
        path: String,
        /// The limit.
        timeout: Duration,
    },
}

/// The most of a health answer's body that is read.
const PROBE_BODY_CAP: usize = 1 << 20;

impl Appspace {
    /// GETs `path` from its running app (with its own domain as `Host`);
    /// Ok with the status unless it is a 5xx, the exchange fails or takes
    /// longer than `timeout`.
    pub async fn probe(&self, path: &str, timeout: Duration) -> Result<u16, ProbeError> {
        let running = self.live().ok_or(ProbeError::NotRunning)?;
        let exchange = |why: String| ProbeError::Exchange {
            path: path.to_owned(),
            why,
        };
        let asked = async {
            let stream = running
                .handle
                .open_http()
                .await
                .map_err(|e| exchange(e.to_string()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| exchange(e.to_string()))?;
            tokio::spawn(conn);
            let request = hyper::Request::get(path)
                .header(hyper::header::HOST, &self.config.domain)
                .header(hyper::header::USER_AGENT, "ds-host health check")
                .body(Empty::<bytes::Bytes>::new())
                .map_err(|e| exchange(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| exchange(e.to_string()))?;
            let status = response.status().as_u16();
            // Read the answer to its end: an app that breaks off its body
            // does not work either.
            http_body_util::Limited::new(response.into_body(), PROBE_BODY_CAP)
                .collect()
                .await
                .map_err(|e| exchange(format!("reading the body: {e}")))?;
            Ok(status)
        };
        let status =
            tokio::time::timeout(timeout, asked)
                .await
                .map_err(|_| ProbeError::Timeout {
                    path: path.to_owned(),
                    timeout,
                })??;
        if status >= 500 {
            return Err(ProbeError::ServerError {
                path: path.to_owned(),
                status,
            });
        }
        Ok(status)
    }
}
