//! The real [`Spawner`]: one hook, one process group, bounded time and output.
//!
//! - The hook starts in its own process group (`setpgid(0, 0)`), stdin on
//!   `/dev/null`, stdout/stderr on pipes read here.
//! - Before `execve` the child drops every capability not listed (bounding,
//!   inheritable, permitted, effective, ambient) and sets `no_new_privs`, so
//!   neither setuid binaries nor file capabilities can give them back.
//! - One thread waits on the pipes and a pidfd with `poll`; at the timeout
//!   the whole group gets `SIGKILL`. When the hook's main process exits, what
//!   it left running in its group is killed too: a hook is a one-shot, long
//!   running vendor programs belong in units under `/oem/units/`.
//! - Output lines go to journald's stream socket with the hook's name as the
//!   syslog identifier (stdout at info, stderr at warning); without a journal
//!   they go to our stderr prefixed `name: `. At most [`MAX_OUTPUT`] bytes per
//!   hook are forwarded, the rest is read and counted, never buffered, so a
//!   hook writing gigabytes neither blocks nor grows memory.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caps::{CapSet, Capability, CapsHashSet};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::runner::{HookRun, HookSpec, Spawner};
use crate::state::Exit;

/// Bytes of output forwarded per hook (stdout and stderr together).
pub const MAX_OUTPUT: u64 = 1024 * 1024;
/// Longest line forwarded as one journal entry; longer lines are split.
pub const MAX_LINE: usize = 4096;
/// journald's stream socket, the one systemd connects services' stdout to.
pub const JOURNAL_STREAM_SOCKET: &str = "/run/systemd/journal/stdout";
/// How long to keep reading output after the hook's group is gone (a
/// process that escaped the group with `setsid` may still hold the pipe).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// The real spawner.
#[derive(Debug, Clone)]
pub struct RealSpawner {
    /// journald's stream socket; `None` (or unreachable) means stderr.
    journal: Option<PathBuf>,
    /// The runner's own capabilities, read once (they do not change).
    own: Option<OwnCaps>,
}

impl Default for RealSpawner {
    fn default() -> Self {
        RealSpawner::new(Some(PathBuf::from(JOURNAL_STREAM_SOCKET)))
    }
}

impl RealSpawner {
    /// A spawner sending hook output to `journal` (journald's stream socket),
    /// or to stderr when `None` or unreachable.
    pub fn new(journal: Option<PathBuf>) -> RealSpawner {
        RealSpawner { journal, own: None }
    }
}

/// What the runner itself holds, which bounds what a hook can keep.
#[derive(Debug, Clone)]
struct OwnCaps {
    permitted: CapsHashSet,
    /// Capabilities the kernel knows, when we may drop them from the
    /// bounding set (CAP_SETPCAP); empty otherwise.
    droppable: Vec<Capability>,
}

impl OwnCaps {
    fn read() -> OwnCaps {
        let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
        // Dropping from the bounding set needs CAP_SETPCAP; without it (not
        // root) we hold nothing worth dropping and no_new_privs stops exec
        // from granting anything, so the bounding set is left alone.
        let can_setpcap =
            caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
        let droppable = if can_setpcap {
            caps::runtime::thread_all_supported().into_iter().collect()
        } else {
            Vec::new()
        };
        OwnCaps {
            permitted,
            droppable,
        }
    }
}

/// Where one stream's lines go.
enum LineSink {
    /// A journal stream, and the stderr prefix to fall back to.
    Journal(UnixStream, String),
    /// Our stderr, each line behind a `name: ` prefix.
    Stderr(String),
}

impl LineSink {
    /// Open a journal stream for `ident` at `priority`, as systemd does for
    /// services (header documented in systemd's journald-stream.c: identifier,
    /// unit id, priority, level prefix, forward to syslog, kmsg, console).
    fn open(journal: Option<&Path>, ident: &str, priority: u8) -> LineSink {
        if let Some(sock) = journal {
            if let Ok(mut s) = UnixStream::connect(sock) {
                let header = format!("{ident}\n\n{priority}\n0\n0\n0\n0\n");
                if s.write_all(header.as_bytes()).is_ok() {
                    let _ = s.shutdown(std::net::Shutdown::Read);
                    return LineSink::Journal(s, format!("{ident}: "));
                }
            }
        }
        LineSink::Stderr(format!("{ident}: "))
    }

    fn line(&mut self, line: &[u8]) {
        match self {
            LineSink::Journal(s, prefix) => {
                if s.write_all(line).and_then(|_| s.write_all(b"\n")).is_err() {
                    // journald went away: keep the output visible.
                    *self = LineSink::Stderr(std::mem::take(prefix));
                    self.line(line);
                }
            }
            LineSink::Stderr(prefix) => {
                let mut e = io::stderr().lock();
                let _ = e.write_all(prefix.as_bytes());
                let _ = e.write_all(line);
                let _ = e.write_all(b"\n");
            }
        }
    }
}

/// One output pipe being read.
struct Stream {
    fd: Option<OwnedFd>,
    partial: Vec<u8>,
    sink: LineSink,
    last_line: Option<String>,
}

/// Shared byte budget of a hook's output.
#[derive(Default)]
struct Budget {
    forwarded: u64,
    dropped: u64,
}

impl Stream {
    fn new(fd: OwnedFd, sink: LineSink) -> Stream {
        Stream {
            fd: Some(fd),
            partial: Vec::new(),
            sink,
            last_line: None,
        }
    }

    fn emit(&mut self, budget: &mut Budget, line: &[u8]) {
        let len = line.len() as u64 + 1;
        if budget.forwarded + len > MAX_OUTPUT {
            budget.dropped += len;
            return;
        }
        budget.forwarded += len;
        if !line.is_empty() {
            let text = String::from_utf8_lossy(line);
            self.last_line = Some(text.chars().take(200).collect());
        }
        self.sink.line(line);
    }

    /// Emit one line, in pieces of at most [`MAX_LINE`] bytes.
    fn emit_split(&mut self, budget: &mut Budget, line: &[u8]) {
        if line.is_empty() {
            self.emit(budget, line);
        }
        for chunk in line.chunks(MAX_LINE) {
            self.emit(budget, chunk);
        }
    }

    /// Read what is available; returns false at EOF.
    fn read(&mut self, budget: &mut Budget) -> bool {
        let Some(fd) = self.fd.as_ref() else {
            return false;
        };
        let mut buf = [0u8; 16384];
        let n = match rustix::io::read(fd, &mut buf) {
            Ok(0) => {
                self.finish(budget);
                return false;
            }
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => return true,
            Err(_) => {
                self.finish(budget);
                return false;
            }
        };
        let mut data = &buf[..n];
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            let (head, rest) = data.split_at(pos);
            if self.partial.is_empty() {
                self.emit_split(budget, head);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.emit_split(budget, &line);
            }
            data = &rest[1..];
        }
        self.partial.extend_from_slice(data);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            let line = std::mem::replace(&mut self.partial, rest);
            self.emit(budget, &line);
        }
        true
    }

    fn finish(&mut self, budget: &mut Budget) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(budget, &line);
        }
        self.fd = None;
    }
}

/// Capability changes prepared before `fork` so the child only makes syscalls.
struct CapPlan {
    keep: CapsHashSet,
    drop_bounding: Vec<Capability>,
}

impl CapPlan {
    fn new(own: &OwnCaps, wanted: &[Capability]) -> CapPlan {
        // Only keep what we have: asking capset for more fails with EPERM.
        let keep: CapsHashSet = wanted
            .iter()
            .copied()
            .filter(|c| own.permitted.contains(c))
            .collect();
        let drop_bounding = own
            .droppable
            .iter()
            .copied()
            .filter(|c| !keep.contains(c))
            .collect();
        CapPlan {
            keep,
            drop_bounding,
        }
    }

    /// Runs in the child between fork and exec.
    fn apply(&self) -> io::Result<()> {
        let err = |e: caps::errors::CapsError| io::Error::other(e.to_string());
        for c in &self.drop_bounding {
            caps::drop(None, CapSet::Bounding, *c).map_err(err)?;
        }
        // Ambient capabilities survive exec for non-root; clear them. Kernels
        // before 4.3 have no ambient set: nothing to clear there.
        let _ = caps::clear(None, CapSet::Ambient);
        caps::set(None, CapSet::Inheritable, &self.keep).map_err(err)?;
        caps::set(None, CapSet::Effective, &self.keep).map_err(err)?;
        caps::set(None, CapSet::Permitted, &self.keep).map_err(err)?;
        nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
        Ok(())
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Exited { code },
        (None, Some(signal)) => Exit::Signaled { signal },
        (None, None) => Exit::Exited { code: -1 },
    }
}

fn kill_group(pgid: u32) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    // ESRCH: the group is already empty.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

impl Spawner for RealSpawner {
    fn run(&mut self, spec: &HookSpec) -> HookRun {
        match self.try_run(spec) {
            Ok(run) => run,
            Err(e) => HookRun {
                exit: Exit::SpawnFailed {
                    error: format!("{}: {e}", spec.program.display()),
                },
                output_bytes: 0,
                output_dropped: 0,
                last_stderr: None,
            },
        }
    }
}

impl RealSpawner {
    fn try_run(&mut self, spec: &HookSpec) -> io::Result<HookRun> {
        let flags = rustix::pipe::PipeFlags::CLOEXEC;
        let (out_r, out_w) = rustix::pipe::pipe_with(flags)?;
        let (err_r, err_w) = rustix::pipe::pipe_with(flags)?;
        for fd in [&out_r, &err_r] {
            rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK)?;
        }
        let own = self.own.get_or_insert_with(OwnCaps::read);
        let plan = CapPlan::new(own, &spec.capabilities);
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec. keel-oem
        // is single-threaded while it spawns hooks (no other thread can hold
        // a lock the child would need), and `apply` only makes the capset,
        // prctl and capget syscalls on data prepared before the fork; it
        // allocates only to build an error on its failure path.
        unsafe {
            cmd.pre_exec(move || plan.apply());
        }
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        // Close our copies of the write ends, or we would never see EOF.
        drop(cmd);
        let pgid = child.id();
        let pidfd = rustix::process::Pid::from_raw(pgid as i32)
            .ok_or_else(|| io::Error::other("child has pid 0"))
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                    .map_err(io::Error::from)
            });
        let pidfd = match pidfd {
            Ok(fd) => fd,
            Err(e) => {
                kill_group(pgid);
                let _ = child.wait();
                return Err(e);
            }
        };
        let journal = self.journal.as_deref();
        let mut streams = [
            Stream::new(out_r, LineSink::open(journal, &spec.name, 6)),
            Stream::new(err_r, LineSink::open(journal, &spec.name, 4)),
        ];
        let mut budget = Budget::default();
        let deadline = start + spec.timeout;
        let mut exit: Option<Exit> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            let open: Vec<usize> = (0..2).filter(|&i| streams[i].fd.is_some()).collect();
            if exit.is_some() && open.is_empty() {
                break;
            }
            let now = Instant::now();
            let until = drain_until.unwrap_or(deadline);
            if now >= until {
                if exit.is_none() {
                    // Timeout: the whole group goes, grandchildren included.
                    kill_group(pgid);
                    let _ = child.wait();
                    exit = Some(Exit::TimedOut {
                        after_secs: spec.timeout.as_secs(),
                    });
                    drain_until = Some(Instant::now() + DRAIN_GRACE);
                    continue;
                }
                break;
            }
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|&i| streams[i].fd.as_ref())
                .map(|fd| PollFd::new(fd, PollFlags::IN))
                .collect();
            if exit.is_none() {
                fds.push(PollFd::new(&pidfd, PollFlags::IN));
            }
            let ts = timespec(until - now);
            match poll(&mut fds, Some(&ts)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            for (slot, &i) in open.iter().enumerate() {
                if ready[slot] {
                    streams[i].read(&mut budget);
                }
            }
            if exit.is_none() && ready.last() == Some(&true) {
                // The main process exited (a zombie until we wait, so the
                // group id cannot be reused): kill what it left behind.
                kill_group(pgid);
                exit = Some(exit_of(child.wait()?));
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
        }
        for s in &mut streams {
            if s.fd.is_some() {
                // Read what is buffered, then give up on a writer that escaped.
                while s.read(&mut budget) && s.fd.is_some() {
                    let Some(fd) = s.fd.as_ref() else { break };
                    let mut probe = [PollFd::new(fd, PollFlags::IN)];
                    if !matches!(poll(&mut probe, Some(&timespec(Duration::ZERO))), Ok(n) if n > 0)
                    {
                        break;
                    }
                }
                s.fd = None;
            }
        }
        if budget.dropped > 0 {
            let note = format!(
                "keel-oem: {} bytes of output dropped beyond the {} byte limit",
                budget.dropped, MAX_OUTPUT
            );
            streams[1].sink.line(note.as_bytes());
        }
        let last_stderr = streams[1].last_line.take();
        Ok(HookRun {
            exit: exit.unwrap_or(Exit::Exited { code: -1 }),
            output_bytes: budget.forwarded,
            output_dropped: budget.dropped,
            last_stderr,
        })
    }
}

/// Read a file fully with a size limit (the manifest, unit files).
pub fn read_limited(path: &Path, limit: u64) -> io::Result<String> {
    let f = std::fs::File::open(path)?;
    let mut s = String::new();
    f.take(limit + 1).read_to_string(&mut s)?;
    if s.len() as u64 > limit {
        return Err(io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `data` through a pipe into a Stream whose sink is a socketpair,
    /// and return what reached the sink plus the budget.
    fn pump(data: &[u8], budget: &mut Budget) -> (Vec<u8>, Option<String>) {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let (tx, mut rx) = UnixStream::pair().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(w);
            f.write_all(&data).unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            rx.read_to_end(&mut v).unwrap();
            v
        });
        let mut s = Stream::new(r, LineSink::Journal(tx, "t: ".into()));
        while s.read(budget) {}
        writer.join().unwrap();
        let last = s.last_line.take();
        drop(s);
        (reader.join().unwrap(), last)
    }

    #[test]
    fn lines_are_forwarded_and_a_partial_last_line_is_flushed() {
        let mut b = Budget::default();
        let (out, last) = pump(b"one\ntwo\n\nthree", &mut b);
        assert_eq!(out, b"one\ntwo\n\nthree\n");
        assert_eq!(last.as_deref(), Some("three"));
        assert_eq!(b.forwarded, out.len() as u64);
        assert_eq!(b.dropped, 0);
    }

    #[test]
    fn long_lines_are_split() {
        let mut b = Budget::default();
        let line = vec![b'x'; MAX_LINE * 2 + 10];
        let (out, _) = pump(&[line.as_slice(), b"\n"].concat(), &mut b);
        let lines: Vec<&[u8]> = out
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            lines.iter().map(|l| l.len()).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, 10]
        );
    }

    #[test]
    fn output_beyond_the_budget_is_counted_not_forwarded() {
        let mut b = Budget::default();
        let line = [vec![b'y'; 1023], vec![b'\n']].concat();
        let data = line.repeat(3 * 1024); // 3 MiB
        let (out, _) = pump(&data, &mut b);
        assert_eq!(out.len() as u64, MAX_OUTPUT);
        assert_eq!(b.forwarded, MAX_OUTPUT);
        assert_eq!(b.dropped, 2 * MAX_OUTPUT);
    }
}
