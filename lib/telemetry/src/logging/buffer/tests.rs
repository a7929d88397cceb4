use std::time::Instant;

use super::*;

/// What reached the "stderr" of a test, and in how many writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<(Vec<u8>, usize)>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut captured = self.0.lock().unwrap();
        captured.0.extend_from_slice(buf);
        captured.1 += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
    }

    fn writes(&self) -> usize {
        self.0.lock().unwrap().1
    }
}

/// Runs `log` with a subscriber writing through `writer`.
fn logging_to(writer: &BufferedWriter, log: impl FnOnce()) {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, log);
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn info_lines_wait_and_a_warning_writes_them_first_in_one_write() {
    let captured = Captured::default();
    let writer = BufferedWriter::new(Box::new(captured.clone()), HOUR).unwrap();
    logging_to(&writer, || {
        tracing::info!("first");
        tracing::info!("second");
    });
    assert_eq!(captured.text(), "", "an info line was written at once");
    logging_to(&writer, || tracing::warn!("trouble"));
    let text = captured.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].ends_with("first"), "{text}");
    assert!(lines[1].ends_with("second"), "{text}");
    assert!(
        lines[2].contains("WARN") && lines[2].ends_with("trouble"),
        "{text}"
    );
    assert_eq!(captured.writes(), 1);
}

#[test]
fn a_full_buffer_is_written_without_waiting() {
    let captured = Captured::default();
    let writer = BufferedWriter::new(Box::new(captured.clone()), HOUR).unwrap();
    let line = "x".repeat(1000);
    let lines = FLUSH_AT / 1000 + 1;
    logging_to(&writer, || {
        for _ in 0..lines {
            tracing::info!("{line}");
        }
    });
    // The buffer filled up somewhere before the last line (each line has
    // its time and level too), went out in one write, and the rest waits.
    let written = captured.text().lines().count();
    assert!(
        written > 0 && written < lines,
        "{written} of {lines} lines written"
    );
    assert_eq!(captured.writes(), 1);
    writer.flush();
    assert_eq!(captured.text().lines().count(), lines);
}

#[test]
fn buffered_lines_are_written_within_the_interval_and_on_flush() {
    let captured = Captured::default();
    let writer =
        BufferedWriter::new(Box::new(captured.clone()), Duration::from_millis(10)).unwrap();
    logging_to(&writer, || tracing::info!("eventually"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !captured.text().contains("eventually") {
        assert!(Instant::now() < deadline, "the line never left the buffer");
        std::thread::sleep(Duration::from_millis(5));
    }

    let quiet = Captured::default();
    let writer = BufferedWriter::new(Box::new(quiet.clone()), HOUR).unwrap();
    logging_to(&writer, || tracing::info!("at exit"));
    assert_eq!(quiet.text(), "");
    writer.flush();
    assert!(quiet.text().ends_with("at exit\n"), "{}", quiet.text());
    writer.try_flush();
    assert_eq!(quiet.writes(), 1, "an empty buffer was written");
}
