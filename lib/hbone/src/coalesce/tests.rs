use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use identity::ca::Ca;
use identity::{Identity, WorkloadCert};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const TTL: Duration = Duration::from_secs(3600);

/// A TCP stream that counts the writes made to it: the `writev`s a
/// connection would make.
struct CountingTcp {
    tcp: TcpStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

type ClientTls = tokio_rustls::client::TlsStream<CountingTcp>;
type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;

/// A mutual-TLS connection over loopback, the client's socket writes
/// counted.
async fn tls_pair() -> (ClientTls, ServerTls, Arc<AtomicUsize>) {
    let ca = Ca::self_signed("cluster.local", 24 * TTL).unwrap();
    let cert = |sa: &str| -> Arc<WorkloadCert> {
        let id = Identity::new("cluster.local", "default", sa).unwrap();
        Arc::new(ca.issue(&id, TTL).unwrap())
    };
    let (client_cert, server_cert) = (cert("client"), cert("server"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        identity::tls::server_config(&server_cert).unwrap(),
    ));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        identity::tls::client_config(&client_cert, std::slice::from_ref(&server_cert.identity))
            .unwrap(),
    ));
    let writes = Arc::new(AtomicUsize::new(0));
    let tcp = CountingTcp {
        tcp: TcpStream::connect(addr).await.unwrap(),
        writes: writes.clone(),
    };
    let name = ServerName::IpAddress(addr.ip().into());
    let (client, server) = tokio::join!(connector.connect(name, tcp), async {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await
    });
    (client.unwrap(), server.unwrap(), writes)
}

#[tokio::test]
async fn writes_reach_the_socket_at_the_flush_and_arrive_whole() {
    let (client, mut server, writes) = tls_pair().await;
    let mut client = Coalesced::new(client);
    let before = writes.load(Ordering::Relaxed);
    client.write_all(b"first ").await.unwrap();
    client.write_all(b"second").await.unwrap();
    assert_eq!(
        writes.load(Ordering::Relaxed),
        before,
        "a write went to the socket"
    );
    client.flush().await.unwrap();
    assert_eq!(
        writes.load(Ordering::Relaxed),
        before + 1,
        "one socket write per flush"
    );
    let mut received = [0u8; 12];
    server.read_exact(&mut received).await.unwrap();
    assert_eq!(&received, b"first second");
    // The stream still closes as TLS does: close_notify, then EOF.
    client.shutdown().await.unwrap();
    assert_eq!(server.read(&mut received).await.unwrap(), 0);
}

#[tokio::test]
async fn a_full_session_buffer_is_written_out_and_takes_more() {
    let (mut client, mut server, _) = tls_pair().await;
    client.get_mut().1.set_buffer_limit(Some(1024));
    let mut client = Coalesced::new(client);
    let sent: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = sent.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
        client.flush().await.unwrap();
        client
    });
    let mut received = vec![0u8; expected.len()];
    tokio::time::timeout(Duration::from_secs(10), server.read_exact(&mut received))
        .await
        .expect("the writer stalled on a full session buffer")
        .unwrap();
    assert!(received == expected, "bytes lost or reordered");
    writer.await.unwrap();
}

/// Two small DATA frames of two streams, sent in one pass of the
/// connection: one socket write through `Coalesced`, two without.
async fn socket_writes_for_two_frames(coalesce: bool) -> usize {
    let (client, server, writes) = tls_pair().await;
    let mut accepted = serve_h2(server);
    let (mut send, connection) = if coalesce {
        h2_client(Coalesced::new(client)).await
    } else {
        h2_client(client).await
    };
    let mut streams = Vec::new();
    for _ in 0..2 {
        send = send.ready().await.unwrap();
        let request = http::Request::post("http://10.0.0.7/").body(()).unwrap();
        let (_, stream) = send.send_request(request, false).unwrap();
        streams.push(stream);
    }
    for _ in 0..2 {
        accepted.recv().await.unwrap();
    }
    // Let settings acknowledgements and window updates go out first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = writes.load(Ordering::Relaxed);
    let body = Bytes::from(vec![b'x'; 300]);
    for stream in &mut streams {
        stream.send_data(body.clone(), false).unwrap();
    }
    for _ in 0..2 {
        assert_eq!(accepted.recv().await.unwrap(), 300);
    }
    let count = writes.load(Ordering::Relaxed) - before;
    connection.abort();
    count
}

/// An HTTP/2 client on `io`, its connection driven by a task of its own.
async fn h2_client<IO>(io: IO) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (send, driver)
}

/// Serves h2 on `tls`; sends 0 for each stream accepted, then the length
/// of each DATA frame received.
fn serve_h2(tls: ServerTls) -> tokio::sync::mpsc::UnboundedReceiver<usize> {
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut connection = h2::server::handshake(tls).await.unwrap();
        while let Some(Ok((request, _respond))) = connection.accept().await {
            events.send(0).unwrap();
            let events = events.clone();
            let mut body = request.into_body();
            tokio::spawn(async move {
                while let Some(Ok(data)) = body.data().await {
                    let _ = body.flow_control().release_capacity(data.len());
                    let _ = events.send(data.len());
                }
            });
        }
    });
    received
}

#[tokio::test]
async fn small_frames_of_one_pass_leave_in_one_socket_write() {
    assert_eq!(socket_writes_for_two_frames(true).await, 1);
    // The plain TLS stream, for contrast: h2 flushes before the second.
    assert_eq!(socket_writes_for_two_frames(false).await, 2);
}
