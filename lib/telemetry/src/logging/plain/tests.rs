use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tracing::field::Empty;
use tracing::{error, info, info_span, warn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use super::*;

/// What a subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl MakeWriter<'_> for Captured {
    type Writer = Captured;

    fn make_writer(&self) -> Self::Writer {
        self.clone()
    }
}

/// The lines `events` logs, formatted by `tracing-subscriber`'s default
/// fields or by [`PlainFields`], without timestamps (those are tested on
/// their own below).
fn render(plain: bool, events: fn()) -> String {
    let out = Captured::default();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_writer(out.clone());
    if plain {
        let subscriber = tracing_subscriber::registry().with(layer.fmt_fields(PlainFields));
        tracing::subscriber::with_default(subscriber, events);
    } else {
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), events);
    }
    String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
}

#[derive(Debug, thiserror::Error)]
#[error("upstream failed")]
struct Outer(#[source] io::Error);

fn access_line() {
    let addr: SocketAddr = "10.244.1.12:34814".parse().unwrap();
    let none: Option<&str> = None;
    info!(
        target: "access",
        protocol = "HTTP/2",
        src.addr = %addr,
        src.workload = Some("client"),
        dst.workload = none,
        method = %http::Method::GET,
        path = %"/a b",
        response_code = Some(200u16),
        upstream.attempts = 1u32,
        bytes_sent = 280u64,
        delta = -5i64,
        big = u128::MAX,
        ok = true,
        ratio = 0.5f64,
        listed = ?vec![1, 2],
        r#type = "raw",
        log.target = "skipped",
        "request complete",
    );
}

fn strings_that_need_escaping() {
    info!(
        quote = "say \"hi\"",
        backslash = "a\\b",
        newline = "a\nb",
        tab = "a\tb",
        accented = "héllo",
        terminal = "\x1b[31mred",
        empty = "",
        "message with \x1b[31m a control sequence and \"quotes\""
    );
    warn!("only a message {}", 5);
    error!(code = 3u64);
}

fn errors_and_spans() {
    let flat = io::Error::other("connection reset");
    let nested = Outer(io::Error::other("connection reset"));
    let connection = info_span!("connection", peer = "10.0.0.1:1", id = 7u64);
    let _connection = connection.enter();
    let request = info_span!("request", route = Empty, attempt = 1u64);
    request.record("route", "b/echo");
    request.record("attempt", 2u64);
    let _request = request.enter();
    warn!(error = &flat as &dyn std::error::Error, "flat");
    error!(error = &nested as &dyn std::error::Error, "with a source");
    info!(error = %flat, "shown");
}

#[test]
fn fields_are_written_exactly_as_the_default_formatter_writes_them() {
    for events in [access_line, strings_that_need_escaping, errors_and_spans] {
        let reference = render(false, events);
        assert!(reference.lines().count() >= 1, "{reference}");
        assert_eq!(render(true, events), reference);
    }
}

#[test]
fn the_reference_lines_hold_what_the_comparison_is_about() {
    // So that the comparison above covers the cases it names: quoted and
    // bare values, a skipped `log.` field, escapes, error sources, spans.
    let access = render(false, access_line);
    assert!(
        access.contains(r#"access: request complete protocol="HTTP/2" src.addr=10.244.1.12:34814 src.workload="client" method=GET path=/a b response_code=200"#),
        "{access}"
    );
    assert!(access.contains("delta=-5 big=340282366920938463463374607431768211455 ok=true ratio=0.5 listed=[1, 2] type=\"raw\"\n"), "{access}");
    assert!(
        !access.contains("dst.workload") && !access.contains("skipped"),
        "{access}"
    );
    let escaped = render(false, strings_that_need_escaping);
    assert!(
        escaped.contains(r#"quote="say \"hi\"" backslash="a\\b" newline="a\nb""#),
        "{escaped}"
    );
    assert!(escaped.contains(r#"terminal="\u{1b}[31mred""#), "{escaped}");
    assert!(escaped.contains("message with \\x1b[31m"), "{escaped}");
    let spans = render(false, errors_and_spans);
    // Fields recorded after the span opened are appended, as they come.
    assert!(
        spans.contains(
            r#"connection{peer="10.0.0.1:1" id=7}:request{attempt=1 route="b/echo" attempt=2}: "#
        ),
        "{spans}"
    );
    assert!(
        spans.contains("error.sources=[connection reset]"),
        "{spans}"
    );
}

#[test]
fn a_second_renders_as_rfc_3339_in_utc() {
    let text =
        |seconds| render_second(seconds).map(|text| String::from_utf8(text.to_vec()).unwrap());
    assert_eq!(text(0).as_deref(), Some("1970-01-01T00:00:00"));
    assert_eq!(text(951_782_400).as_deref(), Some("2000-02-29T00:00:00"));
    assert_eq!(text(1_709_210_096).as_deref(), Some("2024-02-29T12:34:56"));
    assert_eq!(
        text(253_402_300_799).as_deref(),
        Some("9999-12-31T23:59:59")
    );
    // Year 10000 has five digits: not this layout.
    assert_eq!(text(253_402_300_800), None);
}

#[test]
fn microseconds_are_padded_to_six_digits() {
    let second = render_second(1_709_210_096).unwrap();
    let mut out = String::new();
    write_timestamp(&mut out, &second, 5).unwrap();
    assert_eq!(out, "2024-02-29T12:34:56.000005Z");
    out.clear();
    write_timestamp(&mut out, &second, 999_999).unwrap();
    assert_eq!(out, "2024-02-29T12:34:56.999999Z");
}

#[test]
fn the_cached_second_follows_the_clock_both_ways() {
    let text = |seconds| String::from_utf8(second_text(seconds).unwrap().to_vec()).unwrap();
    assert_eq!(text(59), "1970-01-01T00:00:59");
    assert_eq!(text(59), "1970-01-01T00:00:59");
    assert_eq!(text(60), "1970-01-01T00:01:00");
    // A clock stepped back (NTP) is rendered as it now reads.
    assert_eq!(text(59), "1970-01-01T00:00:59");
}

#[test]
fn the_timer_agrees_with_the_default_one() {
    let now = |timer: &dyn FormatTime| {
        let mut text = String::new();
        timer.format_time(&mut Writer::new(&mut text)).unwrap();
        text
    };
    // The two readings straddle a second now and then: try again.
    let agreed = (0..5).any(|_| {
        let ours = now(&UtcMicros);
        let theirs = now(&tracing_subscriber::fmt::time::SystemTime);
        assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
        assert!(
            ours.ends_with('Z') && ours.as_bytes()[SECOND_LEN] == b'.',
            "{ours}"
        );
        ours[..SECOND_LEN] == theirs[..SECOND_LEN]
    });
    assert!(agreed, "the timers never agreed on the second");
}
