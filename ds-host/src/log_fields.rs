//! How the host's log writes the fields of spans and events: `name=value`,
//! strings quoted and escaped only where they need it.
//!
//! Why not tracing-subscriber's default: it formats a span's fields when
//! the span is made, and writes every string through `Debug` (which
//! escapes it character by character) with styling calls around each
//! name. The front door makes a span per request (appspace, method,
//! path), and that formatting was a tenth of the host's instructions per
//! proxied request. Here a string with nothing to escape (nearly all of
//! them) is copied as is; anything else (a control character in a path,
//! a quote) is escaped as `Debug` would, so a request cannot forge log
//! lines.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// The host's field formatter (see the module documentation); give it to
/// `tracing_subscriber::fmt().fmt_fields(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields;

impl<'a> MakeVisitor<Writer<'a>> for LogFields {
    type Visitor = FieldWriter<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        FieldWriter {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one span's or event's fields.
#[derive(Debug)]
pub struct FieldWriter<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    /// Writes the separator and `name=` (nothing for an event's message).
    fn start(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }
}

/// Whether `s` can be written between quotes as is.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// The fields a `log` record carries over into tracing (its target,
/// module, file and line): the line already says where it came from.
fn is_log_metadata(field: &Field) -> bool {
    field.name().starts_with("log.")
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() || is_log_metadata(field) {
            return;
        }
        self.result = self.start(field).and_then(|()| {
            if field.name() == "message" {
                // Written as is, as tracing's own formatter does.
                self.writer.write_str(value)
            } else if plain(value) {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || is_log_metadata(field) {
            return;
        }
        // An event's message is `format_args!`, whose `Debug` is its text.
        self.result = self
            .start(field)
            .and_then(|()| write!(self.writer, "{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for FieldWriter<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for FieldWriter<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(LogFields)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = out.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn span_and_event_fields_are_written_as_name_equals_value() {
        let text = logged(|| {
            let span = tracing::info_span!("request", appspace = "notes", path = "/a b");
            let _entered = span.enter();
            tracing::warn!(status = 502, error = %"refused", "the app did not answer");
        });
        assert_eq!(
            text.trim(),
            "WARN request{appspace=\"notes\" path=\"/a b\"}: ds_host::log_fields::tests: \
             the app did not answer status=502 error=refused"
        );
    }

    #[test]
    fn strings_that_could_forge_a_line_are_escaped() {
        let text = logged(|| {
            let span = tracing::info_span!("request", path = "/x\n INFO forged\"\\\u{7f}");
            let _entered = span.enter();
            tracing::info!("seen");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r#"path="/x\n INFO forged\"\\\u{7f}""#),
            "{text}"
        );
    }
}
