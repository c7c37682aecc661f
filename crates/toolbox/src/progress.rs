//! Progress on a terminal: one line on stderr, rewritten in place, at most
//! ten times a second. Silent when stderr is not a terminal (logs and tests
//! stay clean).

use std::io::Write;
use std::time::{Duration, Instant};

/// The progress line.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// Progress on stderr if it is a terminal.
    pub fn stderr() -> Progress {
        Progress::new(rustix::termios::isatty(std::io::stderr()))
    }

    /// Explicitly enabled or not.
    pub fn new(tty: bool) -> Progress {
        Progress {
            tty,
            last: None,
            shown: false,
        }
    }

    fn draw(&mut self, line: &str) {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[K{line}");
        let _ = e.flush();
        self.shown = true;
    }

    /// A step (always drawn).
    pub fn status(&mut self, msg: &str) {
        if self.tty {
            self.draw(msg);
            self.last = Some(Instant::now());
        }
    }

    /// Bytes of a transfer (throttled).
    pub fn bytes(&mut self, label: &str, done: u64, total: u64) {
        if !self.tty {
            return;
        }
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|l| now.duration_since(l) >= Duration::from_millis(100));
        if !due && done != total {
            return;
        }
        self.last = Some(now);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let line = if total > 0 {
            format!(
                "{label}: {:.1}/{:.1} MiB ({}%)",
                mib(done),
                mib(total),
                done * 100 / total.max(1)
            )
        } else {
            format!("{label}: {:.1} MiB", mib(done))
        };
        self.draw(&line);
    }

    /// Erase the line.
    pub fn clear(&mut self) {
        if self.tty && self.shown {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[K");
            let _ = e.flush();
            self.shown = false;
        }
    }
}
