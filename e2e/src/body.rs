//! Reading HTTP bodies without keeping more of them than is needed: the
//! servers and `traffic` only count the bytes that went by; echo-http keeps
//! the start of an upstream's answer for its report.

use std::future::poll_fn;
use std::pin::Pin;

use hyper::body::{Body, Incoming};

/// Reads `body` to its end, frame by frame, and returns its length in
/// bytes. Nothing is buffered beyond the frame in hand.
pub async fn count_body(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut total = 0u64;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Some(data) = frame?.data_ref() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}

/// Reads `body` until its end or until `limit` bytes, and returns those
/// bytes (at most `limit`, the rest of a frame dropped): an upstream that
/// answers a huge body costs a bounded report, not the server's memory.
pub async fn read_body_prefix(mut body: Incoming, limit: usize) -> Result<Vec<u8>, hyper::Error> {
    let mut kept = Vec::new();
    while kept.len() < limit
        && let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Some(data) = frame?.data_ref() {
            let room = limit - kept.len();
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(kept)
}
