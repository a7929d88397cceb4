//! HTTP/2 settings for HBONE, identical on both ends.
//!
//! Windows are sized so that one bulk stream can keep a fast link busy:
//! the per-stream window bounds a single tunnel's bytes in flight, and the
//! connection window bounds the sum over all tunnels sharing a connection.
//! Istio's ztunnel uses 4 MiB and 16 MiB; we measured the same values to be
//! the knee of the curve on loopback (see docs/performance.md) and keep them.
//!
//! Frames are large, and the TLS layer under them buffers a whole one: h2
//! writes one DATA frame per write, and rustls by default accepts only
//! 64 KiB per write, so a 64 KiB frame went out as one write of four
//! records and a second write with a record of 9 bytes (the rest past
//! the limit), each its own TCP segment. With 1 MiB frames and room for
//! one in rustls, a bulk tunnel's frames are as large as the reads that
//! fill them (ztunnel's are up to 256 KiB) and each goes out in one
//! write: a quarter of the writes, half the packets and about a quarter
//! less CPU per byte through two ztunnels (docs/performance.md, "Frames
//! as large as the reads").

/// An HTTP/2 frame header's length (RFC 9113, section 4.1).
const FRAME_HEADER: usize = 9;

/// HTTP/2 flow-control and framing parameters.
#[derive(Debug, Clone)]
pub struct H2Settings {
    /// Initial per-stream receive window, in bytes.
    pub stream_window: u32,
    /// Initial connection-wide receive window, in bytes.
    pub connection_window: u32,
    /// Largest DATA frame we accept; bigger frames mean fewer headers to
    /// parse and fewer, larger writes to the socket. A frame is only as
    /// large as the data at hand, so small writes stay small.
    pub max_frame_size: u32,
    /// Bytes h2 may buffer per stream before a writer has to wait.
    pub max_send_buffer: usize,
    /// Streams a peer may open concurrently on one connection (server side).
    pub max_concurrent_streams: u32,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
            max_send_buffer: 1024 * 1024,
            max_concurrent_streams: 1000,
        }
    }
}

// === impl H2Settings ===

impl H2Settings {
    /// Bytes of TLS records rustls may hold before a write has to wait for
    /// the socket: a whole frame with its header, and 64 KiB more for
    /// records of the frame before it still waiting, so that the limit
    /// does not split a frame across writes.
    pub(crate) fn tls_send_buffer(&self) -> usize {
        self.max_frame_size as usize + FRAME_HEADER + 64 * 1024
    }

    pub(crate) fn client_builder(&self) -> h2::client::Builder {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer);
        builder
    }

    pub(crate) fn server_builder(&self) -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .max_concurrent_streams(self.max_concurrent_streams);
        builder
    }
}
