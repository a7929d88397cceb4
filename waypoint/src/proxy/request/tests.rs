use std::future::Future;

use hyper::body::Incoming;

use super::*;

/// The size of the future that `handle` returns, without making one.
fn size_of_future<'a, F, Fut>(_: F) -> usize
where
    F: FnOnce(&'a Inner, &'a Downstream, Request<Incoming>) -> Fut,
    Fut: Future,
{
    std::mem::size_of::<Fut>()
}

#[test]
fn a_request_future_stays_small() {
    let size = size_of_future(Inner::handle);
    println!("handle: {size} bytes");
    assert!(size < 8 * 1024, "{size}");
}
