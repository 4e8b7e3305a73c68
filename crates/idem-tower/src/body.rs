use crate::budget::Reservation;
use crate::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The request body the inner service receives: the client's stream,
    /// untouched, for requests the layer does not cover; the buffered bytes
    /// it fingerprinted for those it does.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        kind: ReqKind<B>,
    }
}

pin_project! {
    #[project = ReqKindProj]
    #[derive(Debug)]
    enum ReqKind<B> {
        Stream { #[pin] body: B },
        Buffered { #[pin] body: Full<Bytes> },
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn stream(body: B) -> Self {
        RequestBody {
            kind: ReqKind::Stream { body },
        }
    }

    pub(crate) fn buffered(bytes: Bytes) -> Self {
        RequestBody {
            kind: ReqKind::Buffered {
                body: Full::new(bytes),
            },
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            ReqKindProj::Stream { body } => body.poll_frame(cx).map_err(Into::into),
            ReqKindProj::Buffered { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ReqKind::Stream { body } => body.is_end_stream(),
            ReqKind::Buffered { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ReqKind::Stream { body } => body.size_hint(),
            ReqKind::Buffered { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The response body the layer returns: the inner service's stream (for
    /// uncovered requests, releases, and bodies too large to store), or the
    /// bytes it stored, replays, or a problem document.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: ResKind<B>,
        // Buffered bytes counted against the layer's budget until the body
        // is sent and dropped.
        held: Option<Reservation>,
    }
}

pin_project! {
    #[project = ResKindProj]
    #[derive(Debug)]
    enum ResKind<B> {
        Full { #[pin] body: Full<Bytes> },
        Stream { prefix: Option<Bytes>, #[pin] body: B },
    }
}

impl<B> ResponseBody<B> {
    /// A body of `bytes`, sent whole.
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            kind: ResKind::Full {
                body: Full::new(bytes),
            },
            held: None,
        }
    }

    /// Keeps `held` counted until this body is dropped.
    pub(crate) fn hold(&mut self, held: Reservation) {
        self.held = Some(held);
    }

    pub(crate) fn stream(body: B) -> Self {
        Self::prefixed(None, body)
    }

    /// `prefix` (already read from `body`) then the rest of `body`.
    pub(crate) fn prefixed(prefix: Option<Bytes>, body: B) -> Self {
        ResponseBody {
            kind: ResKind::Stream { prefix, body },
            held: None,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            ResKindProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            ResKindProj::Stream { prefix, body } => {
                if let Some(bytes) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                body.poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResKind::Full { body } => body.is_end_stream(),
            ResKind::Stream { prefix, body } => prefix.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResKind::Full { body } => body.size_hint(),
            ResKind::Stream { prefix: None, body } => body.size_hint(),
            ResKind::Stream {
                prefix: Some(p),
                body,
            } => {
                let inner = body.size_hint();
                let extra = p.len() as u64;
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}
