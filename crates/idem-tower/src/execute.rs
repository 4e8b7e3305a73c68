//! The owner of a claim: runs the inner service on a task of its own,
//! renews the lease while it works, and stores the outcome whether or not
//! the client is still there.

use crate::bounds::{ClientBody, Inner};
use crate::budget::Reservation;
use crate::clock::deadline_after;
use crate::metrics::{self, InFlightGuard, Outcome, StoreOp};
use crate::respond::{self, KeyEcho};
use crate::shared::Shared;
use crate::{error::is_not_executed, BoxError, RequestBody, ResponseBody};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::response::Parts;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use idem_core::{headers::is_hop_by_hop, Problem, ProblemType, RecordId, StoredResponse};
use idem_store::{Completion, Write};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant as StdInstant;
use tokio::time::Instant;

/// What the inner service produced, read as far as the layer needs.
enum Exchange<RB> {
    /// Not sent anywhere: release.
    NotExecuted(BoxError),
    /// Sent, then failed: outcome unknown.
    Failed(BoxError),
    /// A "nothing was done, try again" status: release and pass it on.
    Released(Response<RB>),
    /// A whole response, small enough to store, and its bytes' count
    /// against the buffer budget.
    Complete(Parts, Bytes, Reservation),
    /// A response whose body is over the storage limit: what was read, and
    /// the rest of the stream.
    TooLarge(Parts, Bytes, RB, Reservation),
}

pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
    /// What applies on the request's route.
    pub(crate) policy: Arc<crate::EffectivePolicy>,
    pub(crate) id: RecordId,
    pub(crate) token: u64,
    pub(crate) echo: KeyEcho,
    /// The request's buffered bytes, counted until it has been sent.
    pub(crate) held: Reservation,
}

impl Owner {
    /// Executes the buffered request and returns its response once the
    /// outcome is stored. Runs on a task of the layer's (never on the
    /// client's connection), so a client that goes away does not cancel it.
    pub(crate) async fn execute_buffered<S: Inner<B>, B: ClientBody>(
        mut self,
        inner: S,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Response<ResponseBody<S::Body>> {
        let _gauge = InFlightGuard::enter();
        let request = Request::from_parts(parts, RequestBody::<B>::buffered(body));
        let config = &self.shared.config;
        let max_body = config.max_response_body;
        let releases = self.policy.release_statuses.clone();
        let budget = self.shared.budget.clone();
        // A panic in the inner service is caught here, so the key is marked
        // outcome-unknown instead of staying in flight until its lease ends.
        let exchange = AssertUnwindSafe(async move {
            let mut inner = inner;
            let call = async {
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(request).await
            };
            match call.await.map_err(Into::into) {
                Err(e) if is_not_executed(&e) => Exchange::NotExecuted(e),
                Err(e) => Exchange::Failed(e),
                Ok(response) if releases.releases(response.status().as_u16()) => {
                    Exchange::Released(response)
                }
                Ok(response) => read_body(response, max_body, budget.reservation()).await,
            }
        })
        .catch_unwind();
        tokio::pin!(exchange);
        // One timer serves both the lease renewals and the upstream deadline.
        let renew_every = config.retention.lease / 3;
        let deadline = deadline_after(config.upstream_timeout);
        let mut next_renewal = deadline_after(renew_every);
        let timer = tokio::time::sleep_until(next_renewal.min(deadline));
        tokio::pin!(timer);
        let result = loop {
            tokio::select! {
                biased;
                done = &mut exchange => break done.ok(),
                () = &mut timer => {
                    if Instant::now() >= deadline {
                        // Dropping the exchange cancels the upstream call.
                        break None;
                    }
                    self.renew().await;
                    next_renewal = deadline_after(renew_every);
                    timer.as_mut().reset(next_renewal.min(deadline));
                }
            }
        };
        // The request has been sent (or abandoned): its bytes are gone.
        self.held.shrink_to(0);
        let response = match result {
            Some(Exchange::Complete(parts, body, held)) => {
                let mut response = self.store_and_respond(parts, body).await;
                response.body_mut().hold(held);
                response
            }
            Some(Exchange::TooLarge(parts, prefix, rest, held)) => {
                self.complete(stored(&parts, None, &self.shared.config))
                    .await;
                metrics::count(Outcome::Executed);
                let mut response =
                    Response::from_parts(parts, ResponseBody::prefixed(Some(prefix), rest));
                response.body_mut().hold(held);
                self.echo.apply(&mut response);
                response
            }
            Some(Exchange::Released(response)) => {
                self.release().await;
                metrics::count(Outcome::Released);
                let mut response = response.map(ResponseBody::stream);
                self.echo.apply(&mut response);
                response
            }
            Some(Exchange::NotExecuted(e)) => {
                self.release().await;
                metrics::count(Outcome::Released);
                tracing::warn!(key = %self.id.key, error = %e, "upstream not reached; key released");
                respond::problem(
                    &self.shared.config.problems,
                    Problem::new(
                        ProblemType::UpstreamUnavailable,
                        format!("The request was not delivered ({e}). Nothing was executed; retry with the same key."),
                    )
                    .with_key(Some(&self.id.key)),
                    Some(&self.echo),
                )
            }
            Some(Exchange::Failed(e)) => {
                self.unknown(format!(
                    "The upstream failed after the request was sent ({e})."
                ))
                .await
            }
            None => {
                self.unknown(format!(
                    "The upstream did not answer within {:?}, or the handler panicked.",
                    self.shared.config.upstream_timeout
                ))
                .await
            }
        };
        self.shared.waiters.wake(&self.id);
        response
    }

    async fn store_and_respond<RB>(
        &self,
        mut parts: Parts,
        body: Bytes,
    ) -> Response<ResponseBody<RB>> {
        self.complete(stored(&parts, Some(body.clone()), &self.shared.config))
            .await;
        metrics::count(Outcome::Executed);
        parts.headers.remove(TRANSFER_ENCODING);
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut response = Response::from_parts(parts, ResponseBody::full(body));
        self.echo.apply(&mut response);
        response
    }

    async fn unknown<RB>(&self, detail: String) -> Response<ResponseBody<RB>> {
        let started = StdInstant::now();
        let now = self.shared.clock.now();
        match self
            .shared
            .store
            .mark_unknown(&self.id, self.token, now)
            .await
        {
            Ok(Write::Written) => {}
            Ok(Write::Fenced) => {
                tracing::warn!(key = %self.id.key, "outcome-unknown not written: a newer claim holds the key")
            }
            Err(e) => {
                tracing::error!(key = %self.id.key, error = &e as &dyn std::error::Error, "could not mark outcome unknown; the lease will run out instead")
            }
        }
        self.shared.store_ops.record(StoreOp::MarkUnknown, started);
        metrics::count(Outcome::Unknown);
        tracing::warn!(key = %self.id.key, %detail, "outcome unknown");
        respond::problem(
            &self.shared.config.problems,
            Problem::new(
                ProblemType::UpstreamTimeout,
                format!("{detail} The request may have been executed; the key is now outcome-unknown and will not be executed again."),
            )
            .with_key(Some(&self.id.key)),
            Some(&self.echo),
        )
    }

    async fn complete(&self, response: StoredResponse) {
        let started = StdInstant::now();
        let now = self.shared.clock.now();
        let completion = Completion::new(response, now, &self.policy.retention);
        let result = self
            .shared
            .store
            .complete(&self.id, self.token, completion.clone())
            .await;
        self.shared.store_ops.record(StoreOp::Complete, started);
        match result {
            Ok(Write::Written) => {}
            Ok(Write::Fenced) => {
                tracing::warn!(key = %self.id.key, "completion refused: a newer claim holds the key")
            }
            // The client still gets the real response now. The outcome is
            // written as soon as the store is back; until then the key reads
            // in progress, then outcome-unknown, and is never re-executed.
            Err(e) => {
                metrics::count(Outcome::StoreError);
                tracing::error!(key = %self.id.key, error = &e as &dyn std::error::Error, "could not store the outcome; retrying in the background");
                let shared = self.shared.clone();
                let (id, token) = (self.id.clone(), self.token);
                self.shared
                    .executions
                    .spawn(retry_completion(shared, id, token, completion));
            }
        }
    }

    async fn release(&self) {
        let started = StdInstant::now();
        match self.shared.store.release(&self.id, self.token).await {
            Ok(Write::Written) => {}
            Ok(Write::Fenced) => {
                tracing::warn!(key = %self.id.key, "release refused: a newer claim holds the key")
            }
            Err(e) => {
                tracing::error!(key = %self.id.key, error = &e as &dyn std::error::Error, "could not release the key; it becomes outcome-unknown when its lease runs out")
            }
        }
        self.shared.store_ops.record(StoreOp::Release, started);
    }

    async fn renew(&self) {
        let started = StdInstant::now();
        let now = self.shared.clock.now();
        let lease_until = now.plus(self.shared.config.retention.lease);
        match self
            .shared
            .store
            .renew(&self.id, self.token, now, lease_until)
            .await
        {
            Ok(Write::Written) => {}
            Ok(Write::Fenced) => {
                tracing::warn!(key = %self.id.key, "lease renewal refused: the claim was taken over")
            }
            Err(e) => {
                tracing::warn!(key = %self.id.key, error = &e as &dyn std::error::Error, "lease renewal failed; will retry")
            }
        }
        self.shared.store_ops.record(StoreOp::Renew, started);
    }
}

/// Reads a response body up to `max` bytes, counting them in `held`
/// (never refused: the request was executed, its outcome must be kept).
async fn read_body<RB>(response: Response<RB>, max: usize, mut held: Reservation) -> Exchange<RB>
where
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let (parts, mut body) = response.into_parts();
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Exchange::Complete(parts, buf.freeze(), held),
            Some(Err(e)) => return Exchange::Failed(e.into()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    held.force_grow(data.len());
                    buf.extend_from_slice(&data);
                    if buf.len() > max {
                        return Exchange::TooLarge(parts, buf.freeze(), body, held);
                    }
                }
                // Trailers are not stored: replays carry none.
            }
        }
    }
}

fn stored(parts: &Parts, body: Option<Bytes>, config: &crate::IdempotencyConfig) -> StoredResponse {
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !is_hop_by_hop(name) && config.replay_headers.keeps(name) && *name != config.key_header
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect();
    StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body,
    }
}

/// Writes a completion the store refused, with capped exponential backoff,
/// until it is written or fenced, or retention has passed (then there is
/// nothing left to replay anyway).
async fn retry_completion(shared: Arc<Shared>, id: RecordId, token: u64, completion: Completion) {
    let mut pauses = crate::clock::Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(5),
    );
    loop {
        tokio::time::sleep(pauses.next_pause()).await;
        if shared.clock.now() >= completion.expires_at {
            tracing::error!(key = %id.key, "gave up storing the outcome: retention passed while the store was unavailable");
            return;
        }
        match shared.store.complete(&id, token, completion.clone()).await {
            Ok(Write::Written) => {
                tracing::info!(key = %id.key, "outcome stored after the store came back");
                shared.waiters.wake(&id);
                return;
            }
            Ok(Write::Fenced) => {
                tracing::warn!(key = %id.key, "late completion refused: a newer claim holds the key");
                return;
            }
            Err(e) => {
                tracing::debug!(key = %id.key, error = &e as &dyn std::error::Error, "store still unavailable");
            }
        }
    }
}
