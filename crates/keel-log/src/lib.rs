//! Logging setup shared by every Keel binary.
//!
//! Owns one decision: where `tracing` events go. Under systemd, when stderr is
//! the journal stream (`$JOURNAL_STREAM` names stderr's device and inode, the
//! check systemd documents in systemd.exec(5)), events go to journald with
//! their structured fields; otherwise they are formatted to stderr. Binaries
//! whose stdout is data never log to stdout.
//!
//! The filter comes from `$KEEL_LOG` (directives such as
//! `debug` or `keel_netd=trace`), defaulting to `info`.

use std::os::unix::fs::MetadataExt;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

/// Where log events should go, decided from the process environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal, with structured fields.
    Journald,
    /// Plain text on stderr.
    Stderr,
}

/// Decide the sink: journald when stderr is the journal stream systemd gave us.
pub fn detect_sink() -> Sink {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return Sink::Stderr;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return Sink::Stderr;
    };
    if journal_stream_matches(&stream.to_string_lossy(), meta.dev(), meta.ino()) {
        Sink::Journald
    } else {
        Sink::Stderr
    }
}

/// `$JOURNAL_STREAM` is `DEVICE:INODE` in decimal.
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// Initialise logging once, in `main`. `ident` is the syslog identifier used
/// in the journal. Falls back to stderr when journald cannot be reached.
pub fn init(ident: &str) {
    init_with(ident, detect_sink());
}

/// The filter `$KEEL_LOG` asks for: `LEVEL`, `TARGET=LEVEL`, comma
/// separated (`debug`, `keel_netd=trace,info`); `info` when unset, and
/// `info` with a warning on stderr when it does not parse. `Targets`, not
/// `EnvFilter`: the same directives Keel documents without span or field
/// matching, and without the regex engine (about 180 KiB of every static
/// binary).
pub fn filter_from(spec: Option<&str>) -> Targets {
    let default = || Targets::new().with_default(LevelFilter::INFO);
    match spec.map(str::trim) {
        None | Some("") => default(),
        Some(s) => s.parse().unwrap_or_else(|e| {
            eprintln!("KEEL_LOG={s:?}: {e}; logging at info");
            default()
        }),
    }
}

/// Initialise logging with an explicit sink (tests, `--log-to` style flags).
pub fn init_with(ident: &str, sink: Sink) {
    let filter = filter_from(std::env::var("KEEL_LOG").ok().as_deref());
    let registry = tracing_subscriber::registry().with(filter);
    if sink == Sink::Journald {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer.with_syslog_identifier(ident.to_string());
            // A second init (tests) is harmless: keep the first subscriber.
            let _ = registry.with(layer).try_init();
            return;
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time();
    let _ = registry.with(fmt).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keel_log_directives() {
        use tracing::Level;
        let f = filter_from(None);
        assert!(f.would_enable("keel_update", &Level::INFO));
        assert!(!f.would_enable("keel_update", &Level::DEBUG));
        let f = filter_from(Some("keel_netd=trace,warn"));
        assert!(f.would_enable("keel_netd::dhcp", &Level::TRACE));
        assert!(!f.would_enable("keel_update", &Level::INFO));
        assert!(f.would_enable("keel_update", &Level::WARN));
        let f = filter_from(Some("debug"));
        assert!(f.would_enable("zbus", &Level::DEBUG));
        // Nonsense: info, not silence and not everything.
        let f = filter_from(Some("keel_netd=loud"));
        assert!(f.would_enable("keel_netd", &Level::INFO));
        assert!(!f.would_enable("keel_netd", &Level::DEBUG));
    }

    #[test]
    fn journal_stream_parsing() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 1));
        assert!(!journal_stream_matches("garbage", 8, 12345));
        assert!(!journal_stream_matches("8:", 8, 0));
    }

    #[test]
    fn no_journal_stream_means_stderr() {
        // The test runner is not started by systemd with a journal stream on fd 2
        // that matches; JOURNAL_STREAM may be inherited but will not match a pipe.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert_eq!(detect_sink(), Sink::Stderr);
        }
    }
}
