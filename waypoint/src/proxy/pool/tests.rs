use super::*;

fn key() -> ConnectionKey {
    ConnectionKey {
        worker: None,
        addr: SocketAddr::from(([10, 0, 0, 1], 8080)),
        hbone_identity: None,
        http2: false,
    }
}

fn http2_key() -> ConnectionKey {
    ConnectionKey {
        http2: true,
        ..key()
    }
}

fn other_key() -> ConnectionKey {
    ConnectionKey {
        addr: SocketAddr::from(([10, 0, 0, 2], 8080)),
        ..key()
    }
}

/// The ids of two worker threads.
fn two_workers() -> (WorkerId, WorkerId) {
    let workers = hbone::Workers::start("pool-test", 2).unwrap();
    // Held together, the two placements are on the two workers.
    let (first, second) = (workers.place(), workers.place());
    let id = |placement: &hbone::Placement| {
        let (sender, receiver) = std::sync::mpsc::channel();
        placement
            .handle()
            .spawn(async move { sender.send(hbone::current_worker()) });
        receiver.recv().unwrap().expect("a worker has an id")
    };
    (id(&first), id(&second))
}

fn limits(connections: u32, pending: u32) -> Limits {
    Limits {
        max_connections: Some(connections),
        max_pending_requests: Some(pending),
        ..Limits::default()
    }
}

fn service() -> Arc<str> {
    "b.ns.svc.cluster.local".into()
}

fn opened(checkout: Checkout) -> Slot {
    match checkout {
        Checkout::Ready(Lease::Open(slot)) => slot,
        other => panic!("expected room to open a connection, got {other:?}"),
    }
}

fn waiting(checkout: Checkout) -> Waiting {
    match checkout {
        Checkout::Wait(waiting) => waiting,
        other => panic!("expected a place in line, got {other:?}"),
    }
}

#[test]
fn at_the_limit_one_request_waits_and_the_next_overflows() {
    let pool = Arc::new(ConnectionPool::default());
    let limits = limits(1, 1);
    let _slot = opened(pool.checkout(&service(), &key(), &limits));
    let _in_line = waiting(pool.checkout(&service(), &key(), &limits));
    match pool.checkout(&service(), &key(), &limits) {
        Checkout::Overflow { waiting } => assert_eq!(waiting, 1),
        other => panic!("expected overflow, got {other:?}"),
    }
    let counts = pool.counts(&service(), &key());
    assert_eq!((counts.service, counts.endpoint, counts.waiting), (1, 1, 1));
}

#[test]
fn a_cancelled_waiter_leaves_the_line() {
    let pool = Arc::new(ConnectionPool::default());
    let limits = limits(1, 1);
    let _slot = opened(pool.checkout(&service(), &key(), &limits));
    drop(waiting(pool.checkout(&service(), &key(), &limits)));
    assert_eq!(pool.counts(&service(), &key()).waiting, 0);
    // Its place is free for the next one.
    let _in_line = waiting(pool.checkout(&service(), &key(), &limits));
}

#[tokio::test]
async fn a_closed_connection_makes_room_for_the_first_waiter() {
    let pool = Arc::new(ConnectionPool::default());
    let limits = limits(1, 2);
    let slot = opened(pool.checkout(&service(), &key(), &limits));
    let first = waiting(pool.checkout(&service(), &key(), &limits));
    let second = waiting(pool.checkout(&service(), &key(), &limits));
    drop(slot);
    // Counted for the first waiter already: nobody else may open.
    let counts = pool.counts(&service(), &key());
    assert_eq!((counts.service, counts.waiting), (1, 1));
    let Some(Lease::Open(granted)) = first.lease().await else {
        panic!("the first waiter gets the room");
    };
    drop(granted);
    assert!(matches!(second.lease().await, Some(Lease::Open(_))));
    assert_eq!(pool.counts(&service(), &key()), ConnectionCounts::default());
    assert!(pool.lock().is_empty(), "the pool forgets unused services");
}

#[tokio::test]
async fn room_granted_to_a_waiter_that_gives_up_goes_to_the_next() {
    let pool = Arc::new(ConnectionPool::default());
    let limits = limits(1, 2);
    let slot = opened(pool.checkout(&service(), &key(), &limits));
    let first = waiting(pool.checkout(&service(), &key(), &limits));
    let second = waiting(pool.checkout(&service(), &key(), &limits));
    drop(slot);
    // The first was given the room, but is cancelled before it looks.
    drop(first);
    assert!(matches!(second.lease().await, Some(Lease::Open(_))));
}

#[test]
fn an_endpoint_without_connections_opens_one_over_the_service_limit() {
    let pool = Arc::new(ConnectionPool::default());
    let limits = limits(1, 1);
    let _slot = opened(pool.checkout(&service(), &key(), &limits));
    let _other = opened(pool.checkout(&service(), &other_key(), &limits));
    assert_eq!(pool.counts(&service(), &key()).service, 2);
}

#[test]
fn services_are_counted_apart() {
    let pool = Arc::new(ConnectionPool::default());
    let limits = limits(1, 1);
    let _slot = opened(pool.checkout(&service(), &key(), &limits));
    let elsewhere: Arc<str> = "c.ns.svc.cluster.local".into();
    let _other = opened(pool.checkout(&elsewhere, &key(), &limits));
}

#[test]
fn without_limits_nothing_waits() {
    let pool = Arc::new(ConnectionPool::default());
    let none = Limits::default();
    let slots: Vec<Slot> = (0..10)
        .map(|_| opened(pool.checkout(&service(), &key(), &none)))
        .collect();
    assert_eq!(pool.counts(&service(), &key()).service, 10);
    drop(slots);
    assert_eq!(pool.counts(&service(), &key()), ConnectionCounts::default());
}

#[test]
fn a_passthrough_shares_the_service_count_and_is_refused_at_the_limit() {
    let pool = Arc::new(ConnectionPool::default());
    let one = limits(1, 1);
    let tcp = pool.open_tcp(&service(), &one).expect("room for the first");
    assert_eq!(pool.counts(&service(), &key()).service, 1);
    // No line for TCP, and no exception for an endpoint without any.
    assert_eq!(
        pool.open_tcp(&service(), &one).map(drop),
        Err(TcpOverflow { open: 1 })
    );
    drop(tcp);
    assert!(pool.lock().is_empty(), "the pool forgets unused services");
    // An HTTP connection holds the service's one connection: no room.
    let http = opened(pool.checkout(&service(), &key(), &one));
    assert_eq!(
        pool.open_tcp(&service(), &one).map(drop),
        Err(TcpOverflow { open: 1 })
    );
    drop(http);
    let _tcp = pool.open_tcp(&service(), &one).expect("room again");
}

#[tokio::test]
async fn a_passthrough_that_ends_makes_room_for_a_waiting_request() {
    let pool = Arc::new(ConnectionPool::default());
    let two = limits(2, 1);
    let _http = opened(pool.checkout(&service(), &key(), &two));
    let tcp = pool
        .open_tcp(&service(), &two)
        .expect("room for the second");
    // The passthrough holds the other connection: a request waits.
    let in_line = waiting(pool.checkout(&service(), &key(), &two));
    drop(tcp);
    assert!(matches!(in_line.lease().await, Some(Lease::Open(_))));
}

#[test]
fn without_limits_passthroughs_are_never_refused() {
    let pool = Arc::new(ConnectionPool::default());
    let slots: Vec<TcpSlot> = (0..10)
        .map(|_| pool.open_tcp(&service(), &Limits::default()).unwrap())
        .collect();
    assert_eq!(pool.counts(&service(), &key()).service, 10);
    drop(slots);
    assert!(pool.lock().is_empty());
}

/// Real hyper connections on in-memory pipes, to a server answering `ok`
/// (and 101 to an upgrade).
mod connections {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use std::time::Duration;

    use super::super::super::body::KeptBody;
    use super::*;

    fn server(io: tokio::io::DuplexStream, http2: bool) {
        let service = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
            if request.uri().path() == "/slow" {
                tokio::time::sleep(SLOW).await;
            }
            let mut response = http::Response::new(Full::new(Bytes::from_static(b"ok")));
            if request.headers().contains_key("upgrade") {
                *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                *response.body_mut() = Full::default();
                let headers = response.headers_mut();
                headers.insert("connection", http::HeaderValue::from_static("upgrade"));
                headers.insert("upgrade", http::HeaderValue::from_static("test"));
            }
            Ok::<_, Infallible>(response)
        });
        tokio::spawn(async move {
            let io = TokioIo::new(io);
            if http2 {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await;
            }
        });
    }

    /// A connection opened under `slot`, driven by a task that holds the
    /// slot, as `upstream` does.
    async fn http1_connection(slot: Slot) -> Http1Connection {
        http1_connection_and_driver(slot).await.0
    }

    /// As [`http1_connection`], with the task driving it.
    async fn http1_connection_and_driver(
        slot: Slot,
    ) -> (Http1Connection, tokio::task::JoinHandle<()>) {
        let (client, server_side) = tokio::io::duplex(4096);
        server(server_side, false);
        let (mut sender, connection) = http1::handshake(TokioIo::new(client)).await.unwrap();
        let slot = Arc::new(slot);
        let connection_slot = slot.clone();
        let driver = tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
            drop(connection_slot);
        });
        sender.ready().await.unwrap();
        (Http1Connection::new(sender, &slot), driver)
    }

    /// How long the server takes to answer `/slow`.
    const SLOW: Duration = Duration::from_secs(5);

    const SECOND: Duration = Duration::from_secs(1);

    fn idle_after_a_second() -> Limits {
        Limits {
            idle_timeout: Some(SECOND),
            ..limits(1, 5)
        }
    }

    /// A request the server answers after [`SLOW`].
    fn slow_request(http2: bool) -> http::Request<UpstreamBody> {
        let mut request = request(http2);
        *request.uri_mut() = if http2 {
            http::Uri::from_static("http://b/slow")
        } else {
            http::Uri::from_static("/slow")
        };
        request
    }

    /// Lets the pool's tasks run (its watchers start their clocks).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// A new HTTP/2 connection for `key` under `slot`, added to the pool:
    /// the opener's sender.
    async fn http2_connection(
        pool: &Arc<ConnectionPool>,
        slot: Slot,
        limits: &Limits,
    ) -> http2::SendRequest<UpstreamBody> {
        let (client, server_side) = tokio::io::duplex(4096);
        server(server_side, true);
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
        let pool_key = slot.key().clone();
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
        pool.add_http2(&pool_key, sender, limits)
    }

    fn request(http2: bool) -> http::Request<UpstreamBody> {
        let mut request = http::Request::new(UpstreamBody::replay(&KeptBody::default()));
        if http2 {
            *request.version_mut() = http::Version::HTTP_2;
            *request.uri_mut() = http::Uri::from_static("http://b/");
        }
        request
    }

    async fn read_to_end(response: hyper::Result<http::Response<hyper::body::Incoming>>) {
        let body = response.unwrap().into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes(), "ok");
    }

    #[tokio::test]
    async fn a_connection_that_comes_free_goes_to_the_waiting_request() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = limits(1, 1);
        let slot = opened(pool.checkout(&service(), &key(), &limits));
        let mut connection = http1_connection(slot).await;
        let (response, reusable) = connection.send(request(false), &limits);
        assert!(reusable);
        pool.put_back(connection);
        // Busy: the next request waits for it.
        let in_line = waiting(pool.checkout(&service(), &key(), &limits));
        read_to_end(response.await).await;
        let Some(Lease::Http1(mut connection)) = in_line.lease().await else {
            panic!("the waiting request gets the connection");
        };
        assert_eq!(pool.counts(&service(), &key()).service, 1);
        let (response, _) = connection.send(request(false), &limits);
        read_to_end(response.await).await;
    }

    #[tokio::test]
    async fn a_free_connection_is_checked_out_again_without_waiting() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = limits(1, 1);
        let slot = opened(pool.checkout(&service(), &key(), &limits));
        let mut connection = http1_connection(slot).await;
        let (response, _) = connection.send(request(false), &limits);
        pool.put_back(connection);
        read_to_end(response.await).await;
        // hyper marks it ready as it reads the end of the response: the
        // next request takes it, whether its watcher has run or not.
        assert!(matches!(
            pool.checkout(&service(), &key(), &limits),
            Checkout::Ready(Lease::Http1(_))
        ));
    }

    #[tokio::test]
    async fn a_free_connection_of_another_worker_is_not_checked_out() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = limits(1, 1);
        let (a, b) = two_workers();
        let on_a = ConnectionKey {
            worker: Some(a),
            ..key()
        };
        let on_b = ConnectionKey {
            worker: Some(b),
            ..key()
        };
        let slot = opened(pool.checkout(&service(), &on_a, &limits));
        let mut connection = http1_connection(slot).await;
        let (response, _) = connection.send(request(false), &limits);
        pool.put_back(connection);
        read_to_end(response.await).await;
        // Free, but a's: b opens its first connection to the endpoint, over
        // `maxConnections`, as an Envoy worker does.
        let _b_first = opened(pool.checkout(&service(), &on_b, &limits));
        assert_eq!(pool.counts(&service(), &on_b).service, 2);
        // b's next request, at the limit, waits for b's connection...
        let _in_line = waiting(pool.checkout(&service(), &on_b, &limits));
        // ...while a's takes a's free one.
        assert!(matches!(
            pool.checkout(&service(), &on_a, &limits),
            Checkout::Ready(Lease::Http1(_))
        ));
    }

    #[tokio::test]
    async fn at_its_last_request_a_connection_closes_and_makes_room() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = Limits {
            max_requests_per_connection: Some(1),
            ..limits(1, 1)
        };
        let slot = opened(pool.checkout(&service(), &key(), &limits));
        let mut connection = http1_connection(slot).await;
        let (response, reusable) = connection.send(request(false), &limits);
        assert!(!reusable);
        drop(connection);
        let in_line = waiting(pool.checkout(&service(), &key(), &limits));
        read_to_end(response.await).await;
        // Closed once its response was done: room to open another.
        assert!(matches!(in_line.lease().await, Some(Lease::Open(_))));
    }

    #[tokio::test]
    async fn an_upgraded_connection_stays_counted_until_its_stream_ends() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = limits(1, 1);
        let slot = opened(pool.checkout(&service(), &key(), &limits));
        let (mut connection, driver) = http1_connection_and_driver(slot).await;
        let hold = connection
            .hold_for_upgrade()
            .expect("the connection is open");
        let mut upgrade = request(false);
        let headers = upgrade.headers_mut();
        headers.insert("connection", http::HeaderValue::from_static("upgrade"));
        headers.insert("upgrade", http::HeaderValue::from_static("test"));
        let (response, _) = connection.send(upgrade, &limits);
        drop(connection);
        let response = response.await.unwrap();
        assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        let stream = hyper::upgrade::on(response)
            .await
            .expect("hyper hands it over");
        // hyper's task has let go of the connection, and of its slot.
        tokio::time::timeout(std::time::Duration::from_secs(5), driver)
            .await
            .expect("the driving task ends at the 101")
            .unwrap();
        let in_line = waiting(pool.checkout(&service(), &key(), &limits));
        assert_eq!(pool.counts(&service(), &key()).service, 1);
        drop(stream);
        drop(hold);
        assert!(matches!(in_line.lease().await, Some(Lease::Open(_))));
    }

    #[tokio::test]
    async fn a_new_http2_connection_is_shared_with_the_requests_waiting_for_it() {
        let pool = Arc::new(ConnectionPool::default());
        let key = http2_key();
        let limits = Limits {
            max_requests_per_connection: Some(2),
            ..limits(1, 5)
        };
        let slot = opened(pool.checkout(&service(), &key, &limits));
        let first = waiting(pool.checkout(&service(), &key, &limits));
        let second = waiting(pool.checkout(&service(), &key, &limits));
        let (client, server_side) = tokio::io::duplex(4096);
        server(server_side, true);
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
        let pool_key = slot.key().clone();
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
        let mut opener = pool.add_http2(&pool_key, sender, &limits);
        // The opener's request and the first waiter's make two: the
        // second waits for another connection.
        let Some(Lease::Http2(mut shared)) = first.lease().await else {
            panic!("the first waiting request shares the new connection");
        };
        assert_eq!(pool.counts(&service(), &key).waiting, 1);
        read_to_end(opener.send_request(request(true)).await).await;
        read_to_end(shared.send_request(request(true)).await).await;
        drop((opener, shared));
        // Nobody holds it any more: it closes, and its room goes on.
        assert!(matches!(second.lease().await, Some(Lease::Open(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_http1_connection_closes_once_idle_for_the_timeout() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = idle_after_a_second();
        let slot = opened(pool.checkout(&service(), &key(), &limits));
        let (mut connection, mut driver) = http1_connection_and_driver(slot).await;
        let (response, _) = connection.send(request(false), &limits);
        pool.put_back(connection);
        read_to_end(response.await).await;
        let free = Instant::now();
        settle().await;
        tokio::time::advance(SECOND - Duration::from_millis(1)).await;
        settle().await;
        assert!(!driver.is_finished(), "open until the timeout");
        tokio::time::timeout(SECOND, &mut driver)
            .await
            .expect("closed at the timeout")
            .unwrap();
        assert!(free.elapsed() >= SECOND);
        // Its slot is gone: the service counts no connection.
        assert_eq!(pool.counts(&service(), &key()).service, 0);
        assert!(matches!(
            pool.checkout(&service(), &key(), &limits),
            Checkout::Ready(Lease::Open(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn reusing_an_http1_connection_restarts_its_idle_clock() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = idle_after_a_second();
        let slot = opened(pool.checkout(&service(), &key(), &limits));
        let (mut connection, mut driver) = http1_connection_and_driver(slot).await;
        let (response, _) = connection.send(request(false), &limits);
        pool.put_back(connection);
        read_to_end(response.await).await;
        settle().await;
        tokio::time::advance(Duration::from_millis(700)).await;
        let Checkout::Ready(Lease::Http1(mut connection)) =
            pool.checkout(&service(), &key(), &limits)
        else {
            panic!("the free connection is checked out again");
        };
        let (response, _) = connection.send(request(false), &limits);
        pool.put_back(connection);
        read_to_end(response.await).await;
        let free_again = Instant::now();
        settle().await;
        // 1.4 s after it first came free, 0.7 s after its reuse.
        tokio::time::advance(Duration::from_millis(700)).await;
        settle().await;
        assert!(!driver.is_finished(), "reuse restarted the clock");
        tokio::time::timeout(SECOND, &mut driver)
            .await
            .expect("closed a second after its last request")
            .unwrap();
        assert!(free_again.elapsed() >= SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_http1_connection_is_not_closed_by_the_idle_timeout() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = idle_after_a_second();
        let slot = opened(pool.checkout(&service(), &key(), &limits));
        let (mut connection, mut driver) = http1_connection_and_driver(slot).await;
        let (response, _) = connection.send(slow_request(false), &limits);
        pool.put_back(connection);
        // Five times the idle timeout in use: answered whole.
        read_to_end(response.await).await;
        settle().await;
        assert!(!driver.is_finished());
        tokio::time::timeout(SECOND * 2, &mut driver)
            .await
            .expect("closed once idle")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_idle_timeout_a_free_connection_stays_open() {
        let pool = Arc::new(ConnectionPool::default());
        let limits = Limits {
            idle_timeout: None,
            ..limits(1, 1)
        };
        let slot = opened(pool.checkout(&service(), &key(), &limits));
        let (mut connection, mut driver) = http1_connection_and_driver(slot).await;
        let (response, _) = connection.send(request(false), &limits);
        pool.put_back(connection);
        read_to_end(response.await).await;
        let day = Duration::from_secs(24 * 3600);
        assert!(
            tokio::time::timeout(day, &mut driver).await.is_err(),
            "still open a day later"
        );
        assert!(matches!(
            pool.checkout(&service(), &key(), &limits),
            Checkout::Ready(Lease::Http1(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_http2_connection_leaves_the_pool_unless_reused() {
        let pool = Arc::new(ConnectionPool::default());
        let key = http2_key();
        let limits = idle_after_a_second();
        let slot = opened(pool.checkout(&service(), &key, &limits));
        let mut opener = http2_connection(&pool, slot, &limits).await;
        read_to_end(opener.send_request(request(true)).await).await;
        drop(opener);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let Checkout::Ready(Lease::Http2(mut shared)) = pool.checkout(&service(), &key, &limits)
        else {
            panic!("shared while used within the timeout");
        };
        read_to_end(shared.send_request(request(true)).await).await;
        drop(shared);
        // 1.4 s after it was opened, 0.7 s after its last request.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let Checkout::Ready(Lease::Http2(shared)) = pool.checkout(&service(), &key, &limits) else {
            panic!("the last request restarted its clock");
        };
        drop(shared);
        tokio::time::sleep(SECOND + Duration::from_millis(1)).await;
        // Idle for the timeout: closed, and its room is free.
        settle().await;
        assert_eq!(pool.counts(&service(), &key).service, 0);
        assert!(matches!(
            pool.checkout(&service(), &key, &limits),
            Checkout::Ready(Lease::Open(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_stream_in_flight_is_not_cut_by_the_idle_timeout() {
        let pool = Arc::new(ConnectionPool::default());
        let key = http2_key();
        let limits = idle_after_a_second();
        let slot = opened(pool.checkout(&service(), &key, &limits));
        let mut opener = http2_connection(&pool, slot, &limits).await;
        let slow = tokio::spawn(async move {
            read_to_end(opener.send_request(slow_request(true)).await).await
        });
        tokio::time::sleep(SECOND * 2).await;
        // Out of the pool, still counted while its stream runs: the next
        // request waits for room.
        let in_line = waiting(pool.checkout(&service(), &key, &limits));
        tokio::time::timeout(SLOW, slow)
            .await
            .expect("the slow response comes")
            .unwrap();
        // Closed once its stream ended: room for the waiting request.
        assert!(matches!(in_line.lease().await, Some(Lease::Open(_))));
    }
}
