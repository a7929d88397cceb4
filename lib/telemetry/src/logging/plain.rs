//! Log lines rendered as `tracing-subscriber` renders them with colour off,
//! byte for byte, only cheaper: the fields ([`PlainFields`]) and the
//! timestamp ([`UtcMicros`]).
//!
//! Why: the waypoint writes an access-log line of about twenty fields for
//! every request. Rendered the default way, that line was 16% of the
//! waypoint's user-space instructions at 1,000 requests a second
//! (callgrind): a `write!` with styling per field, the `Debug` escaper
//! walking every string, and a calendar computed for every timestamp. Here
//! a plain string is copied as it is when it needs no escaping, a number
//! is written with `itoa`, and the date and time up to the second are
//! rendered once a second per thread. Whatever is not one of those common
//! cases (a message, an error, a string to escape) goes through the
//! default visitor itself, so the output cannot drift from it.
//!
//! The output is checked against the default formatter's in `tests`.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;

/// Formats fields as `tracing_subscriber::fmt::format::DefaultFields` does
/// without ANSI colours: `message` first as it is, then `name=value`
/// separated by spaces, strings quoted.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PlainFields;

/// The current time as the default `SystemTime` timer writes it,
/// `2026-12-03T23:43:26.454023Z`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct UtcMicros;

// === impl PlainFields ===

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// One set of fields being written.
struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet, so the next field needs no leading space.
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes the separator and `name=` of a field, or returns false when
    /// the field is not to be written: after an error, and for the `log.*`
    /// fields of a record bridged from the `log` crate, which the line's
    /// head has already shown (as the default visitor skips them).
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        self.result = (|| {
            self.writer.write_str(separator)?;
            self.writer.write_str(name)?;
            self.writer.write_char('=')
        })();
        self.result.is_ok()
    }

    /// Hands one field to the default visitor, for the cases whose output
    /// this one does not reproduce itself (messages, with their escaping of
    /// terminal control sequences, and errors with their sources).
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        self.is_empty = false;
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.delegate(|default| default.record_str(field, value));
        }
        if self.start(field) {
            self.result = write_quoted(&mut self.writer, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(|default| default.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return self.delegate(|default| default.record_debug(field, value));
        }
        if self.start(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// `value` as `{:?}` writes it: quoted, with escapes. A string of
/// printable ASCII without quotes or backslashes, the usual case (names,
/// addresses, paths), has none, so it is copied as it is.
fn write_quoted(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    let verbatim = value
        .bytes()
        .all(|byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\');
    if verbatim {
        writer.write_char('"')?;
        writer.write_str(value)?;
        writer.write_char('"')
    } else {
        write!(writer, "{value:?}")
    }
}

// === impl UtcMicros ===

impl FormatTime for UtcMicros {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok();
        match now.and_then(|since| Some((second_text(since.as_secs())?, since.subsec_micros()))) {
            Some((second, micros)) => write_timestamp(writer, &second, micros),
            // Before 1970 or after 9999: the default timer's rules.
            None => tracing_subscriber::fmt::time::SystemTime.format_time(writer),
        }
    }
}

/// The length of `2026-12-03T23:43:26`.
const SECOND_LEN: usize = 19;

thread_local! {
    /// The last second this thread rendered, and its text: log lines come
    /// many to a second, and the calendar is the costly part.
    static LAST_SECOND: Cell<Option<(u64, [u8; SECOND_LEN])>> = const { Cell::new(None) };
}

/// The text of the second `seconds` after the epoch, from this thread's
/// cache when it is the last one asked for.
fn second_text(seconds: u64) -> Option<[u8; SECOND_LEN]> {
    if let Some((second, text)) = LAST_SECOND.get()
        && second == seconds
    {
        return Some(text);
    }
    let text = render_second(seconds)?;
    LAST_SECOND.set(Some((seconds, text)));
    Some(text)
}

/// `<second>.<micros>Z`.
fn write_timestamp(
    writer: &mut impl fmt::Write,
    second: &[u8; SECOND_LEN],
    micros: u32,
) -> fmt::Result {
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    // Both are ASCII digits and separators, so neither conversion fails.
    writer.write_str(std::str::from_utf8(second).map_err(|_| fmt::Error)?)?;
    writer.write_char('.')?;
    writer.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)?;
    writer.write_char('Z')
}

/// `2026-12-03T23:43:26` for `seconds` after the epoch, or `None` outside
/// years 1970-9999.
fn render_second(seconds: u64) -> Option<[u8; SECOND_LEN]> {
    let time = time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()?;
    // Once a second, so `format!` is cheap enough; a five-digit year makes
    // the text longer than the layout, and `try_into` refuses it.
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    );
    text.as_bytes().try_into().ok()
}

#[cfg(test)]
mod tests;
