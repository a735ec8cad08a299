//! A deadline for the whole request body.
//!
//! hyper's header timeout stops a client that never finishes its headers;
//! nothing stops one that sends honest headers and then its body a byte a
//! minute, holding a connection and a handler (and up to
//! `ingest.max_body_bytes` of buffer) for as long as it likes. Every body
//! is therefore wrapped so that it must arrive in full within
//! `ingest.body_timeout` of the headers; past that, reading it fails with
//! [`BodyTimedOut`], which the handlers answer with 408.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

use super::IngestState;

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// True when `error` (or an error it wraps) is a [`BodyTimedOut`].
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    super::error::caused_by::<BodyTimedOut>(error)
}

struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: puts every request body under `ingest.body_timeout`.
pub async fn limit_body_time(
    State(state): State<IngestState>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = state.settings().ingest.body_timeout;
    let request = request.map(|inner| {
        Body::new(Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        })
    });
    next.run(request).await
}
