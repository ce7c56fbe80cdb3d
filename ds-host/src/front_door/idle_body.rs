//! A body that fails when no data moves for a while: a client that stops
//! sending its upload, or an app that stops sending its response, cannot
//! hold a connection (and the appspace's in-flight count) forever, while a
//! transfer that keeps moving may take as long as it needs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why an [`IdleBody`] ended.
#[derive(Debug, thiserror::Error)]
pub enum IdleBodyError<E> {
    /// No data for the idle limit.
    #[error("no body data for {0:?}")]
    Idle(Duration),
    /// The inner body failed.
    #[error(transparent)]
    Inner(E),
}

/// `inner`, failing after `idle` without a frame.
///
/// The clock runs only while the body is waiting for data: a body whose
/// frames are ready when asked for (most small answers) never touches the
/// timer wheel.
#[derive(Debug)]
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Allocated the first time the body waits; re-armed each time.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<B> IdleBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl<B: Body + Unpin> Body for IdleBody<B> {
    type Data = B::Data;
    type Error = IdleBodyError<B::Error>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(IdleBodyError::Inner)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.armed {
                    timer.as_mut().reset(deadline);
                    this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(IdleBodyError::Idle(this.idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_and_a_moving_one_does_not() {
        let (mut tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
        let mut body = IdleBody::new(body, Duration::from_secs(5));
        let feeder = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                tx.send_data(Bytes::from_static(b"x")).await.unwrap();
            }
            // Then stall, keeping the sender alive.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        for _ in 0..4 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"x"));
        }
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, IdleBodyError::Idle(_)));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        feeder.abort();
    }
}
