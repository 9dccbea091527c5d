//! The server's own log: tracing to stderr, in the configured format, that never fails a request.
//!
//! A service manager usually redirects stderr to a file. When that file's disk is full, a
//! write fails; tracing-subscriber then reports the failure with `eprintln!`, which panics when
//! stderr cannot be written, and the panic took the request that logged down with it (the client
//! saw its connection closed). [`LogWriter`] drops the line instead, counts it in
//! `datagate_log_lines_dropped_total`, and writes how many were dropped once it can write again.

use datagate_core::Config;
use datagate_core::config::LogFormat;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber: `RUST_LOG` if set, else `log.level`; `log.format`.
pub fn init(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let json = matches!(cfg.log.format, LogFormat::Json);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(LogWriter { json });
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init()
    } else {
        builder.init()
    }
}

/// Lines that could not be written since the last one that could.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// stderr, one formatted event per `write`; a line that cannot be written is dropped and
/// counted, never reported as an error.
#[derive(Clone, Copy)]
pub struct LogWriter {
    /// The note about dropped lines is a JSON line too.
    json: bool,
}

impl LogWriter {
    /// Writes `buf` to `out`, first the note about lines dropped before it, if any.
    fn write_to(&self, out: &mut impl Write, buf: &[u8]) {
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 && out.write_all(self.note(dropped).as_bytes()).is_err() {
            DROPPED.fetch_add(dropped, Ordering::Relaxed);
        }
        if out.write_all(buf).and_then(|()| out.flush()).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("datagate_log_lines_dropped_total").increment(1);
        }
    }

    fn note(&self, dropped: u64) -> String {
        let message = format!("{dropped} log lines could not be written and were dropped");
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if self.json {
            format!(
                "{}\n",
                serde_json::json!({
                    "timestamp": now, "level": "WARN", "message": message,
                    "target": "datagate::logging", "dropped": dropped,
                })
            )
        } else {
            format!("{now}  WARN datagate::logging: {message}\n")
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_to(&mut io::stderr().lock(), buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails while `full` is set.
    struct Disk {
        full: bool,
        written: Vec<u8>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.full {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space"));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_and_reported_once_writing_works() {
        let w = LogWriter { json: true };
        let mut disk = Disk {
            full: true,
            written: Vec::new(),
        };
        for _ in 0..3 {
            w.write_to(&mut disk, b"{\"message\":\"lost\"}\n");
        }
        assert!(disk.written.is_empty());
        disk.full = false;
        w.write_to(&mut disk, b"{\"message\":\"kept\"}\n");
        w.write_to(&mut disk, b"{\"message\":\"kept too\"}\n");
        let text = String::from_utf8(disk.written).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["dropped"], 3, "{text}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[1]["message"], "kept");
        assert_eq!(lines[2]["message"], "kept too");
    }
}
