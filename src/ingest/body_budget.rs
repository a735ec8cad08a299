//! One budget for the request bodies held in memory at once, across every
//! listener.
//!
//! `ingest.max_body_bytes` bounds one body and `ingest.max_connections`
//! the connections, but their product is no bound a host can live with:
//! 100 clients each sending 8 MB slowly took the daemon from 84 MB to
//! 839 MB (issue 28). Every body is therefore charged, as it arrives,
//! against `ingest.max_body_bytes_in_flight`, and the charge is held until
//! its request has been answered (the handler keeps the bytes until then):
//! - a body that declares its length reserves all of it before a byte is
//!   read; if the budget cannot take it, the request is answered `503`
//!   with `Retry-After` at once, without reading it;
//! - a body without a declared length (chunked) is charged frame by frame,
//!   and fails with [`OverBudget`] (answered `503`) at the frame the budget
//!   cannot take.
//!
//! Nothing waits for budget: a waiting body would hold its part while it
//! waited, and slow clients holding parts of the budget could starve
//! everyone else. A refusal costs the client a retry; the budget is never
//! exceeded.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::error::ApiError;

/// The daemon-wide count of body bytes held.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    held: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// Bytes held now (for tests and metrics).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if they fit; never more than the limit in total.
    fn try_take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What one request holds; given back when the last holder (the body, or
/// the middleware once the answer is made) lets go.
#[derive(Debug)]
struct Charge {
    budget: Arc<Budget>,
    /// Reserved up front from the declared length.
    reserved: usize,
    /// Taken frame by frame beyond the reservation.
    taken: AtomicUsize,
    /// Bytes of the body seen so far.
    seen: AtomicUsize,
}

impl Charge {
    /// Accounts for a frame of `bytes`: within the reservation it is free;
    /// beyond it, it is taken from the budget or refused.
    fn frame(&self, bytes: usize) -> bool {
        let seen = self.seen.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let beyond = seen.saturating_sub(self.reserved);
        let taken = self.taken.load(Ordering::Acquire);
        if beyond <= taken {
            return true;
        }
        let more = beyond - taken;
        if self.budget.try_take(more) {
            self.taken.fetch_add(more, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget
            .give_back(self.reserved + self.taken.load(Ordering::Acquire));
    }
}

/// The body could not be held: the budget for bodies in flight is spent.
#[derive(Debug, thiserror::Error)]
#[error("the daemon is holding as many request bodies as ingest.max_body_bytes_in_flight allows")]
pub struct OverBudget;

/// True when `error` (or an error it wraps) is [`OverBudget`].
pub fn over_budget(error: &(dyn std::error::Error + 'static)) -> bool {
    super::error::caused_by::<OverBudget>(error)
}

/// The answer to a request the budget cannot take.
pub fn refusal() -> ApiError {
    ApiError {
        retry_after_secs: Some(1),
        ..ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            format!("{OverBudget}; nothing was read or accepted, try again shortly"),
        )
    }
}

struct Charged {
    inner: Body,
    charge: Arc<Charge>,
}

impl HttpBody for Charged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let bytes = frame.data_ref().map_or(0, Bytes::len);
                if self.charge.frame(bytes) {
                    Poll::Ready(Some(Ok(frame)))
                } else {
                    Poll::Ready(Some(Err(axum::Error::new(OverBudget))))
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: charges every request body to `budget` (see the module
/// docs). A declared length over `ingest.max_body_bytes` never gets here
/// (it is answered 413 first), so a reservation is at most one body.
pub async fn charge_bodies(budget: Arc<Budget>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if declared > 0 && !budget.try_take(declared) {
        return refusal().into_response();
    }
    let charge = Arc::new(Charge {
        budget,
        reserved: declared,
        taken: AtomicUsize::new(0),
        seen: AtomicUsize::new(0),
    });
    let request = request.map(|inner| {
        Body::new(Charged {
            inner,
            charge: charge.clone(),
        })
    });
    let response = next.run(request).await;
    // The handler has answered: whatever it held of the body is gone.
    drop(charge);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_never_exceeded_and_all_of_it_comes_back() {
        let budget = Budget::new(100);
        let declared = Charge {
            budget: budget.clone(),
            reserved: 60,
            taken: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
        };
        assert!(budget.try_take(60), "the reservation");
        assert!(declared.frame(30) && declared.frame(30), "within it");
        assert_eq!(budget.held(), 60);
        // A chunked body: frame by frame, up to what is left.
        let chunked = Charge {
            budget: budget.clone(),
            reserved: 0,
            taken: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
        };
        assert!(chunked.frame(30));
        assert!(!chunked.frame(20), "60 + 30 + 20 is over 100");
        assert_eq!(budget.held(), 90);
        assert!(!budget.try_take(11));
        drop(chunked);
        drop(declared);
        assert_eq!(budget.held(), 0, "everything given back");
        assert!(budget.try_take(100));
    }
}
