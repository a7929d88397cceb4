//! The request body on its way upstream: streamed from the client as it
//! arrives, or kept whole so that a retry can send it again.
//!
//! Keeping is bounded ([`crate::retry::REPLAY_BUFFER_LIMIT`]): a body that
//! does not end within the limit is sent once, the frames already read
//! first and then the rest of the stream, so nothing is lost by trying.
//! Bytes from the client are counted once, as they are read (`Counted`),
//! not once per attempt.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::access_log::Counted;

/// The client's body, counted as it is read.
pub(crate) type ClientBody = Counted<Incoming>;

/// A body that ended within the limit: its data and trailers, cheap to
/// copy (`Bytes`) for each attempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeptBody {
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

/// What reading up to the limit gave.
#[derive(Debug)]
pub(crate) enum Buffered {
    /// The body ended within the limit.
    Kept(KeptBody),
    /// It did not (or says by its length that it will not): one attempt.
    TooLarge(UpstreamBody),
}

/// Reads `body` until it ends or passes `limit` bytes. A body whose
/// declared length is over the limit is not read at all, so a large
/// upload starts streaming at once.
pub(crate) async fn buffer(mut body: ClientBody, limit: usize) -> Result<Buffered, hyper::Error> {
    let mut kept = KeptBody::default();
    let limit = limit as u64;
    if body.size_hint().lower() > limit {
        return Ok(Buffered::TooLarge(UpstreamBody::streamed(kept, body)));
    }
    let mut read: u64 = 0;
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        match frame?.into_data() {
            Ok(data) => {
                read += data.len() as u64;
                kept.data.push(data);
                if read > limit {
                    return Ok(Buffered::TooLarge(UpstreamBody::streamed(kept, body)));
                }
            }
            Err(frame) => {
                // Trailers end a body.
                kept.trailers = frame.into_trailers().ok();
                break;
            }
        }
    }
    Ok(Buffered::Kept(kept))
}

/// The body of one upstream attempt.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// From the client: `read` (already taken off the stream while trying
    /// to keep it) first, then the rest as it arrives.
    Streamed {
        read: VecDeque<Bytes>,
        rest: ClientBody,
    },
    /// A copy of a kept body.
    Replayed {
        data: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

// === impl UpstreamBody ===

impl UpstreamBody {
    pub(crate) fn streamed(read: KeptBody, rest: ClientBody) -> Self {
        UpstreamBody::Streamed {
            read: read.data.into(),
            rest,
        }
    }

    /// The client's body as it arrives, none of it read yet.
    pub(crate) fn streamed_whole(body: ClientBody) -> Self {
        UpstreamBody::Streamed {
            read: VecDeque::new(),
            rest: body,
        }
    }

    pub(crate) fn replay(kept: &KeptBody) -> Self {
        UpstreamBody::Replayed {
            data: kept.data.iter().cloned().collect(),
            trailers: kept.trailers.clone(),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Streamed { read, rest } => match read.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Pin::new(rest).poll_frame(cx),
            },
            UpstreamBody::Replayed { data, trailers } => Poll::Ready(
                data.pop_front()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streamed { read, rest } => read.is_empty() && rest.is_end_stream(),
            UpstreamBody::Replayed { data, trailers } => data.is_empty() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Streamed { read, rest } => {
                let read: u64 = read.iter().map(|d| d.len() as u64).sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
            UpstreamBody::Replayed { data, .. } => {
                SizeHint::with_exact(data.iter().map(|d| d.len() as u64).sum())
            }
        }
    }
}
