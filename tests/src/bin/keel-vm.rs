//! keel-vm: boot the built image in QEMU.
//!
//! `--interactive`: the serial console on this terminal (Ctrl-A X quits QEMU).
//! `--wait`: headless; waits until SSH answers and systemd finished starting,
//! prints how long that took, powers the machine off and exits 0 (1 on failure).
//! Either way the machine boots a copy-on-write overlay, so the image stays
//! pristine. `--uefi` boots the disk through OVMF and systemd-boot (the
//! loader entry's command line applies, `--append` does not). `--config FILE`
//! hands the machine a first-boot config (Ignition JSON or `#cloud-config`)
//! over QEMU's fw_cfg, as a cloud or a hypervisor would.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use keel_tests::{fw_cfg, overlay, qemu_command, BootOptions, Firmware, Image, Vm, OVMF_VARS};

#[derive(Parser)]
#[command(about = "Boot Keel's image in QEMU")]
struct Cli {
    /// The build directory (holds image.json).
    #[arg(long, default_value = "build")]
    build: PathBuf,
    /// Console on this terminal.
    #[arg(long, conflicts_with = "wait")]
    interactive: bool,
    /// Headless: wait for the machine to be ready, then power off and exit 0.
    #[arg(long)]
    wait: bool,
    /// Appended to the kernel command line (e.g. systemd.journald.forward_to_console=1).
    #[arg(long, default_value = "")]
    append: String,
    /// Boot the disk through UEFI firmware (OVMF) and systemd-boot instead of
    /// QEMU's direct kernel boot.
    #[arg(long)]
    uefi: bool,
    /// A first-boot config (Ignition JSON or #cloud-config) given to the
    /// machine over fw_cfg (`opt/org.flatcar-linux/config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds to wait for readiness with --wait.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-vm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The fw_cfg arguments for `--config`, after checking the file is there.
fn config_args(cli: &Cli) -> Result<Vec<String>> {
    let Some(f) = &cli.config else {
        return Ok(Vec::new());
    };
    let f = std::fs::canonicalize(f).with_context(|| format!("--config {}", f.display()))?;
    Ok(fw_cfg(FW_CFG_CONFIG, &f))
}

/// Where Flatcar's QEMU platform (and so Keel's) reads its config.
const FW_CFG_CONFIG: &str = "opt/org.flatcar-linux/config";

fn run(cli: Cli) -> Result<()> {
    let image = Image::load(&cli.build)?;
    let config = config_args(&cli)?;
    if cli.wait {
        let opts = BootOptions {
            extra_cmdline: cli.append.clone(),
            qemu_args: config,
            uefi: cli.uefi,
            ..BootOptions::default()
        };
        let mut vm = Vm::boot("keel-vm", &image, opts)?;
        eprintln!("keel-vm: booting (console: {})", vm.console_path.display());
        let ssh = vm.wait_ssh(Duration::from_secs(cli.timeout))?;
        let state = vm.ssh_ok("systemctl is-system-running --wait || true")?;
        let ready = vm.started.elapsed();
        let os = vm.ssh_ok(". /etc/os-release && echo $PRETTY_NAME")?;
        eprintln!(
            "keel-vm: {} is up: SSH after {:.1}s, system {} after {:.1}s (wall time from QEMU start)",
            os.trim(),
            ssh.as_secs_f64(),
            state.trim(),
            ready.as_secs_f64()
        );
        vm.finish().map(|_| ())?;
        eprintln!("keel-vm: powered off");
        return Ok(());
    }
    let run_dir = cli.build.join("run");
    std::fs::create_dir_all(&run_dir)?;
    let disk = run_dir.join("disk.qcow2");
    let _ = std::fs::remove_file(&disk);
    overlay(
        &image
            .dir
            .join(image.manifest["qcow2"].as_str().unwrap_or("keel.qcow2")),
        &disk,
    )?;
    let port = 2222;
    let cmdline = format!("{} {}", image.cmdline(), cli.append);
    let vars = run_dir.join("OVMF_VARS.fd");
    let firmware = if cli.uefi {
        std::fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
        Firmware::Uefi { vars: &vars }
    } else {
        Firmware::Direct {
            cmdline: cmdline.trim(),
        }
    };
    let mut cmd = qemu_command(&image, &disk, &firmware, port, 1024)?;
    cmd.args(["-serial", "mon:stdio"]).args(&config);
    if let Some(k) = image.ssh_key() {
        eprintln!(
            "keel-vm: console below (Ctrl-A X quits). SSH: ssh -i {} -p {port} core@127.0.0.1",
            k.display()
        );
    }
    Err(cmd.exec()).context("executing qemu-system-x86_64")
}
