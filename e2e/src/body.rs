//! Reading HTTP bodies without keeping them: both sides only need to know
//! how many bytes went by.

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
