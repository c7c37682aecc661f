//! VM test of keel-install (issue 17): install from the build host onto a
//! blank disk file from the release tree served by nginx on loopback, with
//! an Ignition config (SSH key for core, hostname), then boot **that disk**
//! under UEFI firmware and check it comes up provisioned and grown.
//!
//! Needs the image (`./run image`), its release tree with the disk image
//! (`./run release`, in `$KEEL_BUILD_DIR/release`) and a built keel-install
//! (`cargo build -p keel-install`; `KEEL_INSTALL_BIN` overrides the path).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use keel_tests::serve::Nginx;
use keel_tests::{keypair, BootOptions, Image, Vm};

const BOOT: Duration = Duration::from_secs(480);
const HOSTNAME: &str = "keel-installed";

fn installer() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEEL_INSTALL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let mut found: Vec<PathBuf> = ["release", "debug", "x86_64-unknown-linux-musl/release"]
        .iter()
        .map(|d| target.join(d).join("keel-install"))
        .filter(|p| p.is_file())
        .collect();
    found.sort_by_key(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH)
    });
    found
        .pop()
        .context("no keel-install binary: cargo build -p keel-install (or set KEEL_INSTALL_BIN)")
}

#[test]
fn installed_disk_boots_uefi_provisioned() -> Result<()> {
    let img = Image::from_env()?;
    let tree = img.dir.join("release");
    ensure!(
        tree.join("stable/channel.json").is_file(),
        "no release tree in {} (./run release)",
        tree.display()
    );
    let keys = img.dir.join("dev-update-key");
    let bin = installer()?;
    let work = tempfile::Builder::new()
        .prefix("keel-install-vm-")
        .tempdir()?;

    // A blank disk 1 GiB larger than the image: the first boot grows ROOT.
    let raw_size = std::fs::metadata(img.path("raw")?)?.len();
    let disk = work.path().join("installed.raw");
    std::fs::File::create(&disk)?.set_len(raw_size + (1 << 30))?;

    let (key, public) = keypair(work.path(), "install-test")?;
    let pubfile = work.path().join("core.pub");
    std::fs::write(&pubfile, format!("{public}\n"))?;
    let ign = work.path().join("config.ign");
    std::fs::write(
        &ign,
        format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"files":[{{"path":"/etc/hostname","mode":420,"overwrite":true,"contents":{{"source":"data:,{HOSTNAME}"}}}}]}}}}"#
        ),
    )?;

    let nginx = Nginx::serve(&tree)?;
    let t0 = Instant::now();
    let out = Command::new(&bin)
        .arg(&disk)
        .args(["--channel", "stable", "--base-url", &nginx.url()])
        .arg("--keys")
        .arg(&keys)
        .arg("--ignition")
        .arg(&ign)
        .arg("--ssh-key")
        .arg(&pubfile)
        .args(["--platform", "qemu", "--yes"])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    if !out.status.success() {
        bail!("keel-install failed ({}): {stderr}", out.status);
    }
    eprintln!("install: {:.1}s", t0.elapsed().as_secs_f64());
    ensure!(
        stderr.contains("first-boot config in OEM config.ign"),
        "{stderr}"
    );
    drop(nginx);

    // Boot the installed disk, not the image: SSH only with the key from
    // the installed config (the development key is not used).
    let opts = BootOptions {
        uefi: true,
        disk: Some(disk.clone()),
        ssh_key: Some(key),
        ..BootOptions::default()
    };
    let mut vm = Vm::boot("install_uefi", &img, opts)?;
    let ssh = vm.wait_ssh(BOOT)?;
    eprintln!(
        "installed disk: SSH with the config's key after {:.1}s",
        ssh.as_secs_f64()
    );
    let host = vm.ssh_ok("hostname")?;
    ensure!(host.trim() == HOSTNAME, "hostname {host:?}");
    let result = vm.ssh_ok("cat /etc/.keel-provision-result.json")?;
    ensure!(
        result.contains("/oem/config.ign"),
        "provisioning result: {result}"
    );
    let boot: serde_json::Value = serde_json::from_str(&vm.ssh_ok("cat /run/keel/boot.json")?)?;
    ensure!(boot["first_boot"] == true, "boot.json: {boot}");
    ensure!(!boot["growth"].is_null(), "ROOT did not grow: {boot}");
    let root_bytes: u64 = vm
        .ssh_ok("df -B1 --output=size / | tail -1")?
        .trim()
        .parse()
        .context("df")?;
    ensure!(
        root_bytes > 900 << 20,
        "ROOT is {root_bytes} bytes after growth"
    );
    vm.finish()?;
    Ok(())
}
