//! The bounds the layer needs of its inner service and bodies, written
//! once. Sealed: public traits in a private module (callers can neither
//! name nor implement them), with blanket impls.

use crate::{BoxError, RequestBody};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

/// A request body the layer can read: what the client sends.
pub trait ClientBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

impl<B> ClientBody for B where B: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

/// An inner service the layer can wrap, for client bodies `B`.
pub trait Inner<B>:
    Service<
        Request<RequestBody<B>>,
        Response = Response<Self::Body>,
        Future: Send + 'static,
        Error: Into<BoxError> + Send + 'static,
    > + Send
    + 'static
{
    /// The inner service's response body.
    type Body: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;
}

impl<S, B, RB> Inner<B> for S
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    RB: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
{
    type Body = RB;
}
