//! Keel's VM test harness: boots the assembled image under QEMU.
//!
//! Each [`Vm`] boots its own copy-on-write qcow2 overlay of the built image
//! (so tests never change it or each other), captures the serial console to a
//! file, and reaches the guest over SSH through a host-forwarded port on
//! 127.0.0.1 with the image's development key. [`Vm::finish`] scans the
//! console for kernel panics, oopses, emergency states, verity errors and
//! failed units, as CoreOS's kola does, and fails the test on any of them.
//!
//! Acceleration: TCG, unless a probe shows that a KVM guest really runs here
//! (on some machines /dev/kvm exists but guests hang). `KEEL_ACCEL=tcg|kvm`
//! overrides the probe.
//!
//! Reads `$KEEL_BUILD_DIR/image.json` (written by keel-image).

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

pub mod serve;
use serde_json::Value;

/// The built image, from `image.json`.
#[derive(Debug, Clone)]
pub struct Image {
    /// The build directory.
    pub dir: PathBuf,
    /// The parsed manifest.
    pub manifest: Value,
}

impl Image {
    /// Load from `$KEEL_BUILD_DIR` (default `<repo>/build`).
    pub fn from_env() -> Result<Self> {
        let dir = std::env::var_os("KEEL_BUILD_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build"));
        Self::load(&dir)
    }

    /// Load from a build directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let p = dir.join("image.json");
        let text = fs::read_to_string(&p).with_context(|| {
            format!("reading {} (build the image with ./run image)", p.display())
        })?;
        Ok(Image {
            dir: dir.to_path_buf(),
            manifest: serde_json::from_str(&text).with_context(|| p.display().to_string())?,
        })
    }

    /// An artifact's path from the manifest (kernel, initramfs, raw, qcow2).
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        let v = self.manifest[key]
            .as_str()
            .with_context(|| format!("image.json has no {key}"))?;
        Ok(self.dir.join(v))
    }

    /// The kernel command line for a direct-kernel boot.
    pub fn cmdline(&self) -> String {
        self.manifest["cmdline"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The development SSH key, if the image has one.
    pub fn ssh_key(&self) -> Option<PathBuf> {
        self.manifest["dev_ssh_key"]
            .as_str()
            .map(|k| self.dir.join(k))
    }
}

/// How to boot.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// Replace the kernel command line entirely.
    pub cmdline: Option<String>,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// Extra QEMU arguments (fw_cfg, drives…).
    pub qemu_args: Vec<String>,
    /// Use this disk instead of a fresh overlay of the image.
    pub disk: Option<PathBuf>,
    /// Memory in MiB (default 1024).
    pub memory_mib: Option<u32>,
    /// SSH with this private key instead of the image's development key.
    pub ssh_key: Option<PathBuf>,
    /// Boot the disk through UEFI firmware (OVMF) and the ESP's boot loader
    /// instead of QEMU's direct `-kernel` boot; the command line then comes
    /// from the loader entry, so `cmdline`/`extra_cmdline` do not apply.
    pub uefi: bool,
}

/// How a timed-out wait's error starts when the guest had stalled under
/// TCG (see `Vm::timed_out`); `run` greps for it.
pub const TCG_STALL: &str = "guest stalled under TCG (RCU stall on the console): ";

/// Console patterns that fail a test, with what they mean.
pub const CONSOLE_PROBLEMS: &[(&str, &str)] = &[
    ("Kernel panic", "kernel panic"),
    ("Oops:", "kernel oops"),
    ("BUG: ", "kernel BUG"),
    ("keel-init: emergency:", "keel-init emergency state"),
    ("emergency mode", "systemd emergency mode"),
    ("Entering emergency", "systemd emergency mode"),
    ("device-mapper: verity", "dm-verity error"),
    ("[FAILED]", "failed unit"),
    ("Failed to start", "failed unit"),
    ("Found ordering cycle", "systemd unit ordering cycle"),
];

/// The problems found in console text.
pub fn scan_console(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        for (pat, what) in CONSOLE_PROBLEMS {
            if line.contains(pat) {
                found.push(format!("{what}: {}", line.trim()));
            }
        }
    }
    found
}

/// Which accelerator to use: the probe result, cached per build directory.
pub fn accel(image: &Image) -> String {
    if let Ok(a) = std::env::var("KEEL_ACCEL") {
        return a;
    }
    let cache = image.dir.join("accel-probe");
    if let Ok(a) = fs::read_to_string(&cache) {
        return a.trim().to_string();
    }
    let a = if probe_kvm(image) { "kvm" } else { "tcg" };
    let _ = fs::write(&cache, a);
    a.to_string()
}

/// Boot the kernel under KVM with no root: a working KVM prints the kernel's
/// banner and panics (no init) within seconds; a broken one hangs silently.
fn probe_kvm(image: &Image) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let Ok(kernel) = image.path("kernel") else {
        return false;
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(_) => return false,
    };
    let log = dir.path().join("probe.log");
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if fs::read_to_string(&log).is_ok_and(|t| t.contains("Kernel panic")) {
            let _ = child.kill();
            let _ = child.wait();
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    fs::read_to_string(&log).is_ok_and(|t| t.contains("Kernel panic"))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Create a qcow2 overlay backed by `base`.
pub fn overlay(base: &Path, dest: &Path) -> Result<()> {
    let base = fs::canonicalize(base).with_context(|| base.display().to_string())?;
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(dest)
        .output()
        .context("running qemu-img")?;
    ensure!(
        out.status.success(),
        "qemu-img create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A running (or finished) guest.
#[derive(Debug)]
pub struct Vm {
    /// Test name (log file name).
    pub name: String,
    /// The image it booted.
    pub image: Image,
    /// Scratch directory (overlay, console log).
    pub dir: tempfile::TempDir,
    /// The serial console log.
    pub console_path: PathBuf,
    /// The disk it booted.
    pub disk: PathBuf,
    /// SSH port on 127.0.0.1.
    pub port: u16,
    /// Host time when QEMU started.
    pub started: Instant,
    ssh_key: Option<PathBuf>,
    child: Option<Child>,
    /// Console problems this test expects (substrings), see [`Vm::allow`].
    allowed: Vec<String>,
}

impl Vm {
    /// Boot a fresh overlay of the image.
    pub fn boot(name: &str, image: &Image, opts: BootOptions) -> Result<Vm> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("keel-vm-{name}-"))
            .tempdir()?;
        let disk = match &opts.disk {
            Some(d) => d.clone(),
            None => {
                let d = dir.path().join("disk.qcow2");
                overlay(&image.path("qcow2")?, &d)?;
                d
            }
        };
        Self::start(name, image, dir, disk, &opts)
    }

    /// Boot an existing disk again (a second boot of the same machine).
    pub fn reboot_disk(name: &str, image: &Image, disk: &Path, opts: BootOptions) -> Result<Vm> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("keel-vm-{name}-"))
            .tempdir()?;
        Self::start(name, image, dir, disk.to_path_buf(), &opts)
    }

    fn start(
        name: &str,
        image: &Image,
        dir: tempfile::TempDir,
        disk: PathBuf,
        opts: &BootOptions,
    ) -> Result<Vm> {
        let console_path = dir.path().join("console.log");
        let port = free_port()?;
        let mut cmdline = opts.cmdline.clone().unwrap_or_else(|| image.cmdline());
        if !opts.extra_cmdline.is_empty() {
            cmdline = format!("{cmdline} {}", opts.extra_cmdline);
        }
        let vars = dir.path().join("OVMF_VARS.fd");
        let firmware = if opts.uefi {
            fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
            Firmware::Uefi { vars: &vars }
        } else {
            Firmware::Direct { cmdline: &cmdline }
        };
        let mut cmd = qemu_command(
            image,
            &disk,
            &firmware,
            port,
            opts.memory_mib.unwrap_or(1024),
        )?;
        cmd.arg("-serial")
            .arg(format!("file:{}", console_path.display()))
            .args(&opts.qemu_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let child = cmd.spawn().context("starting qemu-system-x86_64")?;
        Ok(Vm {
            name: name.into(),
            image: image.clone(),
            dir,
            console_path,
            disk,
            port,
            started,
            ssh_key: opts.ssh_key.clone().or_else(|| image.ssh_key()),
            child: Some(child),
            allowed: Vec::new(),
        })
    }

    /// The console so far.
    pub fn console(&self) -> String {
        fs::read(&self.console_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Console problems (substrings of [`scan_console`]'s findings) this
    /// boot is expected to show, e.g. dm-verity rejecting a corrupted slot:
    /// neither [`Vm::wait_ssh`] nor [`Vm::finish`] fails on them.
    pub fn allow(&mut self, problems: &[&str]) {
        self.allowed.extend(problems.iter().map(|p| p.to_string()));
    }

    fn is_allowed(&self, problem: &str) -> bool {
        self.allowed.iter().any(|a| problem.contains(a.as_str()))
    }

    /// Fail if QEMU has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(st) = c.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!(
                    "QEMU exited ({st}): {}\n--- console tail ---\n{}",
                    err.trim(),
                    tail(&self.console(), 40)
                );
            }
        }
        Ok(())
    }

    /// The error for a wait that timed out, with the console's tail. A
    /// guest whose kernel reports RCU stalls has stopped running under TCG
    /// (an idle vCPU whose timer never fires: an emulator hang, seen once in
    /// hundreds of boots); the message then starts with [`TCG_STALL`] so
    /// that `./run test vm` can tell it from a failure of Keel and run the
    /// failed test once more (DESIGN.md, test tiers).
    fn timed_out(&self, what: &str) -> anyhow::Error {
        let console = self.console();
        let stalled = console.contains("rcu_preempt detected stalls")
            || console.contains("rcu_sched detected stalls");
        anyhow::anyhow!(
            "{}{what}\n--- console tail ---\n{}",
            if stalled { TCG_STALL } else { "" },
            tail(&console, 40)
        )
    }

    /// Wait until the console contains `pattern`; fail early if QEMU exits.
    pub fn wait_console(&mut self, pattern: &str, timeout: Duration) -> Result<Duration> {
        self.poll_console(pattern, timeout, Duration::from_millis(200))
    }

    /// Check the console for `pattern` every `every` until `timeout`.
    fn poll_console(
        &mut self,
        pattern: &str,
        timeout: Duration,
        every: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.console().contains(pattern) {
                return Ok(self.started.elapsed());
            }
            self.check_alive()?;
            if start.elapsed() > timeout {
                return Err(
                    self.timed_out(&format!("{pattern:?} not on the console after {timeout:?}"))
                );
            }
            std::thread::sleep(every);
        }
    }

    /// The ssh command for `cmd` (stdin null unless replaced).
    pub fn ssh_command(&self, cmd: &str) -> Result<Command> {
        let key = self
            .ssh_key
            .clone()
            .context("no SSH key: the image has no development key and the test gave none")?;
        let mut c = Command::new("ssh");
        c.args([
            "-q",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-i")
        .arg(key)
        .args(["-p", &self.port.to_string(), "core@127.0.0.1", "--", cmd])
        .stdin(Stdio::null());
        Ok(c)
    }

    /// Run `cmd` as core over SSH.
    pub fn ssh(&self, cmd: &str) -> Result<Output> {
        self.ssh_command(cmd)?.output().context("running ssh")
    }

    /// Run `cmd` over SSH; fail unless it exits 0; return its stdout.
    pub fn ssh_ok(&self, cmd: &str) -> Result<String> {
        let out = self.ssh(cmd)?;
        ensure!(
            out.status.success(),
            "`{cmd}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Wait until SSH as core works; fail early on a console problem or exit.
    pub fn wait_ssh(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let fatal: Vec<String> = scan_console(&self.console())
                .into_iter()
                .filter(|p| !p.starts_with("failed unit") && !self.is_allowed(p))
                .collect();
            if !fatal.is_empty() {
                bail!(
                    "boot failed: {}\n--- console tail ---\n{}",
                    fatal.join("\n"),
                    tail(&self.console(), 40)
                );
            }
            if let Ok(out) = self.ssh("true") {
                if out.status.success() {
                    return Ok(self.started.elapsed());
                }
            }
            if start.elapsed() > timeout {
                return Err(self.timed_out(&format!("no SSH after {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Wait for SSH, then for systemd to finish starting up; returns the
    /// state (`running` or `degraded`).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String> {
        self.wait_ssh(timeout)?;
        let out = self.ssh("systemctl is-system-running --wait")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Power off cleanly (bounded), then kill.
    pub fn shutdown(&mut self) {
        if let Some(mut c) = self.child.take() {
            let asked = matches!(c.try_wait(), Ok(None))
                && self
                    .ssh("sudo systemctl poweroff --no-block")
                    .is_ok_and(|o| o.status.success());
            if asked {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(60) {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait until the guest powers off or reboots on its own (QEMU runs
    /// with `-no-reboot`, so a reboot ends it); returns the time since
    /// start. The console is kept for [`Vm::finish`].
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait()?.is_some() {
                    return Ok(self.started.elapsed());
                }
            } else {
                return Ok(self.started.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(
                    self.timed_out(&format!("{} still running after {timeout:?}", self.name))
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether QEMU has exited (the guest powered off or rebooted; the
    /// VMs run with `-no-reboot`), without waiting.
    pub fn has_exited(&mut self) -> Result<bool> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?.is_some()),
            None => Ok(true),
        }
    }

    /// Kill QEMU at once (a power cut).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Shut down, keep the console log, and fail if the console shows any
    /// problem; `allowed` lists substrings of problems this test expects.
    pub fn finish_allowing(mut self, allowed: &[&str]) -> Result<String> {
        self.shutdown();
        let text = self.console();
        self.save_log(&text);
        let problems: Vec<String> = scan_console(&text)
            .into_iter()
            .filter(|p| !allowed.iter().any(|a| p.contains(a)) && !self.is_allowed(p))
            .collect();
        ensure!(
            problems.is_empty(),
            "console of {} shows problems:\n{}\n(full log: {})",
            self.name,
            problems.join("\n"),
            self.log_path().display()
        );
        Ok(text)
    }

    /// [`Vm::finish_allowing`] with nothing allowed.
    pub fn finish(self) -> Result<String> {
        self.finish_allowing(&[])
    }

    fn log_path(&self) -> PathBuf {
        self.image
            .dir
            .join("vm-logs")
            .join(format!("{}.log", self.name))
    }

    fn save_log(&self, text: &str) {
        let p = self.log_path();
        if let Some(d) = p.parent() {
            let _ = fs::create_dir_all(d);
        }
        let _ = fs::write(p, text);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
        let text = self.console();
        self.save_log(&text);
    }
}

/// OVMF (Debian's `ovmf`): the firmware code, read-only.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF's variable store template; each machine boots a copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// How QEMU starts the guest.
#[derive(Debug, Clone, Copy)]
pub enum Firmware<'a> {
    /// QEMU loads the image's kernel and initramfs itself (the fast path).
    Direct {
        /// The kernel command line.
        cmdline: &'a str,
    },
    /// OVMF boots the disk: systemd-boot from the ESP, its loader entry.
    Uefi {
        /// A writable copy of the variable store.
        vars: &'a Path,
    },
}

/// The QEMU command shared by tests and `keel-vm` (serial not yet set).
pub fn qemu_command(
    image: &Image,
    disk: &Path,
    firmware: &Firmware<'_>,
    port: u16,
    memory_mib: u32,
) -> Result<Command> {
    let accel = accel(image);
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", &format!("q35,accel={accel}")])
        .args(["-cpu", if accel == "kvm" { "host" } else { "max" }])
        .args(["-smp", "2", "-m", &memory_mib.to_string()])
        .args(["-nodefaults", "-display", "none", "-no-reboot"]);
    match firmware {
        Firmware::Direct { cmdline } => {
            cmd.arg("-kernel")
                .arg(image.path("kernel")?)
                .arg("-initrd")
                .arg(image.path("initramfs")?)
                .args(["-append", cmdline]);
        }
        Firmware::Uefi { vars } => {
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
    }
    cmd.arg("-drive")
        .arg(format!(
            "if=virtio,file={},format={}",
            disk.display(),
            if disk.extension().is_some_and(|e| e == "qcow2") {
                "qcow2"
            } else {
                "raw"
            }
        ))
        .args([
            "-netdev",
            &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22"),
        ])
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .args(["-device", "virtio-rng-pci"]);
    Ok(cmd)
}

/// Wait for keel-init's emergency state and check the console names the
/// problem: `needles` must all appear, and the boot must not have gone on.
pub fn expect_emergency(vm: &mut Vm, needles: &[&str]) -> Result<String> {
    vm.wait_console("keel-init: emergency:", Duration::from_secs(240))?;
    // Let the rest of the message reach the console.
    std::thread::sleep(Duration::from_secs(2));
    let text = vm.console();
    for n in needles {
        ensure!(
            text.contains(n),
            "console lacks {n:?}\n--- console tail ---\n{}",
            tail(&text, 30)
        );
    }
    ensure!(
        !text.contains("Kernel panic"),
        "kernel panic instead of a halt"
    );
    ensure!(
        !text.contains("switching root"),
        "the boot went on after the emergency"
    );
    // Still halted, not exited or rebooted.
    vm.check_alive()?;
    Ok(text)
}

/// A fresh ed25519 key pair in `dir`: (private key path, public key line).
pub fn keypair(dir: &Path, name: &str) -> Result<(PathBuf, String)> {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .context("running ssh-keygen")?;
    ensure!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = fs::read_to_string(key.with_extension("pub"))?
        .trim()
        .to_string();
    Ok((key, public))
}

/// QEMU arguments passing `file` as fw_cfg item `name`.
pub fn fw_cfg(name: &str, file: &Path) -> Vec<String> {
    vec![
        "-fw_cfg".into(),
        format!("name={name},file={}", file.display()),
    ]
}

/// A sparse copy of the image's raw disk at `dest`, for tests that edit the
/// disk before booting it.
pub fn raw_image_copy(image: &Image, dest: &Path) -> Result<()> {
    let raw = image.path("raw")?;
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&raw)
        .arg(dest)
        .status()?;
    ensure!(st.success(), "copying {}", raw.display());
    Ok(())
}

/// A raw copy of the image whose OEM partition holds `tree` instead of the
/// platform's (mkfs.ext4 from the directory, written at OEM's offset).
pub fn image_with_oem(image: &Image, tree: &Path, dest: &Path) -> Result<()> {
    raw_image_copy(image, dest)?;
    let f = fs::OpenOptions::new().read(true).write(true).open(dest)?;
    let (gpt, _) = keel_gpt::Gpt::read(&f, 512)?;
    let oem = gpt.by_name("OEM").context("no OEM partition")?;
    // The test tree plus the build's development key, which lives on OEM.
    let staged = tempfile::tempdir()?;
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", tree.display()))
        .arg(staged.path())
        .status()?;
    ensure!(st.success(), "copying {}", tree.display());
    if let Some(key) = image.ssh_key() {
        fs::create_dir_all(staged.path().join("dev"))?;
        fs::copy(
            key.with_extension("pub"),
            staged.path().join("dev/authorized_keys"),
        )?;
    }
    let tree = staged.path();
    let fsimg = dest.with_extension("oem.ext4");
    fs::File::create(&fsimg)?.set_len(oem.sectors() * 512)?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "OEM", "-E", "root_owner=0:0", "-d"])
        .arg(tree)
        .arg(&fsimg)
        .output()?;
    ensure!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = fs::read(&fsimg)?;
    use std::os::unix::fs::FileExt;
    f.write_all_at(&data, oem.first_lba * 512)?;
    f.sync_all()?;
    let _ = fs::remove_file(&fsimg);
    Ok(())
}

/// Run `cmd` over SSH with `input` on its stdin.
pub fn ssh_with_input(vm: &Vm, cmd: &str, input: &Path) -> Result<String> {
    let mut c = vm.ssh_command(cmd)?;
    c.stdin(fs::File::open(input)?);
    let out = c.output()?;
    ensure!(
        out.status.success(),
        "`{cmd}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// First LBA of the partition labelled `label` in a raw image.
pub fn partition_offset(raw: &Path, label: &str) -> Result<u64> {
    let f = fs::File::open(raw)?;
    let (gpt, _) = keel_gpt::Gpt::read(&f, 512)?;
    let p = gpt
        .by_name(label)
        .with_context(|| format!("no {label} in {}", raw.display()))?;
    Ok(p.first_lba * 512)
}

/// Overwrite the first 16 MiB of partition `label` (the EROFS superblock
/// among them, for a USR slot) of the qcow2 `disk` with a pattern, from the
/// host, as a failing disk would; `raw` is the image whose GPT gives the
/// partition's offset.
pub fn damage_partition(disk: &Path, raw: &Path, label: &str) -> Result<()> {
    let offset = partition_offset(raw, label)?;
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c"])
        .arg(format!("write -P 0x5a {offset} 16M"))
        .arg(disk)
        .output()
        .context("running qemu-io")?;
    ensure!(
        out.status.success(),
        "qemu-io: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Enlarge a disk image (qcow2 or raw) to `bytes`, as an operator does
/// with `qemu-img resize` before the first boot.
pub fn resize_disk(disk: &Path, bytes: u64) -> Result<()> {
    let fmt = if disk.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    let out = Command::new("qemu-img")
        .args(["resize", "-q", "-f", fmt])
        .arg(disk)
        .arg(bytes.to_string())
        .output()
        .context("running qemu-img resize")?;
    ensure!(
        out.status.success(),
        "qemu-img resize {}: {}",
        disk.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A sparse raw copy of a (powered-off) qcow2 disk, to inspect its GPT and
/// filesystems on the host.
pub fn raw_copy(disk: &Path, dest: &Path) -> Result<()> {
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(disk)
        .arg(dest)
        .output()
        .context("running qemu-img convert")?;
    ensure!(
        out.status.success(),
        "qemu-img convert {}: {}",
        disk.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `e2fsck -fn` of the ext4 in the partition labelled `label` of a raw disk
/// (through e2fsprogs' `?offset=`); fails unless it is clean. Returns the
/// report.
pub fn fsck_partition(raw: &Path, label: &str) -> Result<String> {
    let off = partition_offset(raw, label)?;
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={off}", raw.display()))
        .output()
        .context("running e2fsck")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "e2fsck -fn of {label} in {} ({}):\n{text}",
        raw.display(),
        out.status
    );
    Ok(text)
}

impl Vm {
    /// Cut the power as soon as `pattern` shows on the console (a power
    /// cut in the middle of a boot); returns when QEMU is gone.
    pub fn kill_on_console(&mut self, pattern: &str, timeout: Duration) -> Result<Duration> {
        // A fine poll: the cut should land close to the pattern.
        let at = self.poll_console(pattern, timeout, Duration::from_millis(20))?;
        self.kill();
        Ok(at)
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Percent-encode `s` for an RFC 2397 `data:,` URL (unreserved characters
/// kept), as Ignition configs in the tests carry file contents.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_scan_finds_problems() {
        let text = "ok line\n[   12.3] Kernel panic - not syncing: VFS\n[FAILED] Failed to start foo.service - Foo.\nkeel-init: emergency: opening USR: /dev/vda: boom\n";
        let p = scan_console(text);
        assert!(p.iter().any(|l| l.starts_with("kernel panic: ")));
        assert!(p.iter().any(|l| l.starts_with("failed unit: ")));
        assert!(p
            .iter()
            .any(|l| l.starts_with("keel-init emergency state: ")));
        assert!(scan_console("[  OK  ] Started foo.service\n").is_empty());
    }

    #[test]
    fn tail_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
