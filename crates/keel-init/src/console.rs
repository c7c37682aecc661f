//! keel-init's output: every log line goes to the console (stderr, which the
//! kernel opened on /dev/console for init) and to /dev/kmsg, so it is on the
//! serial console during boot and in the journal afterwards. Lines carry the
//! time since boot (CLOCK_BOOTTIME), like the kernel's own.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::time::Duration;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;

/// Time since the kernel started (CLOCK_BOOTTIME).
pub fn uptime() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

struct Uptime;

impl FormatTime for Uptime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "[{:>8.3}]", uptime().as_secs_f64())
    }
}

/// One log line; written to both sinks when dropped.
#[derive(Debug, Default)]
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = io::stderr().write_all(format!("keel-init: {text}").as_bytes());
        kmsg(6, text.trim_end());
    }
}

/// Makes a [`Line`] per event.
#[derive(Debug, Clone, Copy)]
pub struct Console;

impl<'a> MakeWriter<'a> for Console {
    type Writer = Line;
    fn make_writer(&'a self) -> Self::Writer {
        Line::default()
    }
}

/// Write one record to the kernel log at syslog `level`.
pub fn kmsg(level: u8, text: &str) {
    if let Ok(mut f) = OpenOptions::new().write(true).open("/dev/kmsg") {
        for line in text.lines() {
            let _ = f.write_all(format!("<{level}>keel-init: {line}").as_bytes());
        }
    }
}

/// Set up logging to the console and the kernel log.
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(Console)
        .with_timer(Uptime)
        .with_target(false)
        .with_ansi(false)
        .with_level(false)
        .try_init();
}

/// Print what failed and halt: never return, never exit (PID 1 exiting is a
/// kernel panic, and a panic loop hides the message).
pub fn emergency(message: &str) -> ! {
    let text = format!(
        "\nkeel-init: emergency: {message}\n\
         keel-init: the boot cannot continue safely; the system is halted.\n\
         keel-init: fix the cause (see the message above) and reboot.\n"
    );
    // stderr is /dev/console for init; fall back to opening it.
    if io::stderr().write_all(text.as_bytes()).is_err() {
        if let Ok(mut c) = OpenOptions::new().write(true).open("/dev/console") {
            let _ = c.write_all(text.as_bytes());
        }
    }
    kmsg(2, &format!("emergency: {message}"));
    nix::unistd::sync();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
