//! Presets applied when the image is built, so that no boot runs systemd's
//! first-boot `preset-all` (issue 21).
//!
//! systemd 252 decides "first boot" from `/etc/machine-id` alone: missing, or
//! its first line `uninitialized`, is a first boot (unless
//! `systemd.condition-first-boot=` says otherwise), and on a first boot PID 1
//! runs `preset-all` over every unit file before it starts its first unit
//! (about 7 s under TCG on Keel's 264 unit files, for one alias link). An
//! empty `/etc/machine-id` is *not* a first boot: systemd generates the
//! machine's id at once and writes it into the file (`machine-id(5)`, "First
//! Boot Semantics"). So the build runs the image's own `systemctl preset-all
//! --preset-mode=enable-only` (what the boot would have done) into the tree's
//! `/etc`, which becomes the factory `/etc`, and leaves an empty
//! `/etc/machine-id` there:
//! - every machine still gets its own id, at its first boot, written into the
//!   `/etc` overlay's upper layer on ROOT;
//! - `ConditionFirstBoot=` keeps meaning Keel's first boot:
//!   `keel-first-boot-generator` (overlay) creates `/run/systemd/first-boot`,
//!   the flag systemd's condition checks, when `/run/keel/boot.json` says
//!   keel-init did first-boot work. Generators run after PID 1 decided there
//!   is no preset-all to do, so nothing of the cost comes back;
//! - `systemd-firstboot.service` is masked: provisioning owns first-boot
//!   configuration (`systemd.firstboot=off` already made it a no-op that still
//!   cost a process start on the critical chain);
//! - Debian's placeholder `/etc/fstab` (comments only) is dropped (it does
//!   not skip systemd 252's `systemd-remount-fs.service`, which has no
//!   fstab condition yet: measured, still on the chain).
//!
//! Reads and writes `<tree>/etc` (before it moves to the factory `/etc`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Units masked in the factory `/etc` (`/etc/systemd/system/NAME → /dev/null`).
pub const MASKED: &[&str] = &["systemd-firstboot.service"];

/// What systemd 252's PID 1 concludes from `/etc/machine-id`'s contents
/// (`None`: the file is missing): `true` when it detects a first boot and so
/// runs `preset-all`. Mirrors `src/core/main.c`: a missing file or a first
/// line equal to `uninitialized` is a first boot, anything else is not.
pub fn systemd_sees_first_boot(machine_id: Option<&[u8]>) -> bool {
    match machine_id {
        None => true,
        Some(b) => {
            let line = b.split(|&c| c == b'\n').next().unwrap_or_default();
            line == b"uninitialized"
        }
    }
}

/// Whether an fstab has no entries (comments and blank lines only).
pub fn is_placeholder_fstab(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

/// The enable/alias/mask links under `<etc>/systemd/system`, relative to it.
pub fn unit_links(etc: &Path) -> Result<BTreeSet<String>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for e in rd {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(base, &e.path(), out)?;
            } else if ft.is_symlink() {
                let rel = e.path();
                let rel = rel.strip_prefix(base).unwrap_or(&rel);
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let base = etc.join("systemd/system");
    let mut out = BTreeSet::new();
    walk(&base, &base, &mut out)?;
    Ok(out)
}

/// Mask [`MASKED`] and leave an empty `machine-id` in `etc`; then check that
/// systemd will not see a first boot.
pub fn seal_etc(etc: &Path) -> Result<()> {
    let sys = etc.join("systemd/system");
    fs::create_dir_all(&sys).with_context(|| format!("creating {}", sys.display()))?;
    for u in MASKED {
        let p = sys.join(u);
        let _ = fs::remove_file(&p);
        symlink("/dev/null", &p).with_context(|| format!("masking {}", p.display()))?;
    }
    // Debian's placeholder ("UNCONFIGURED FSTAB") says nothing: keel-init
    // mounts ROOT read-write. Measured: systemd 252's remount-fs has no
    // ConditionPathExists=/etc/fstab yet (later systemd does), so it still
    // runs on the critical chain; dropping the file only helps there.
    let fstab = etc.join("fstab");
    if fs::read_to_string(&fstab).is_ok_and(|t| is_placeholder_fstab(&t)) {
        fs::remove_file(&fstab).with_context(|| format!("removing {}", fstab.display()))?;
    }
    let id = etc.join("machine-id");
    let _ = fs::remove_file(&id);
    fs::write(&id, b"").with_context(|| format!("writing {}", id.display()))?;
    // Debian's mode for the file; systemd rewrites it as root regardless.
    fs::set_permissions(&id, fs::Permissions::from_mode(0o444))?;
    check_etc(etc)
}

/// Fail when a boot from this `/etc` would run systemd's preset-all.
pub fn check_etc(etc: &Path) -> Result<()> {
    let id = etc.join("machine-id");
    let contents = match fs::read(&id) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", id.display())),
    };
    if systemd_sees_first_boot(contents.as_deref()) {
        bail!(
            "{}: systemd would detect a first boot and run preset-all on every machine's first boot",
            id.display()
        );
    }
    Ok(())
}

/// Apply the image's presets to `<tree>/etc` with the tree's own systemctl
/// (the code a first boot would have run, in the mode PID 1 uses), then
/// [`seal_etc`]. Returns the links preset-all added.
pub fn apply(tree: &Path) -> Result<Vec<String>> {
    let etc = tree.join("etc");
    let before = unit_links(&etc)?;
    let out = Command::new("chroot")
        .arg(tree)
        .args(["systemctl", "preset-all", "--preset-mode=enable-only"])
        .output()
        .context("starting chroot systemctl preset-all")?;
    if !out.status.success() {
        bail!(
            "systemctl preset-all in {} failed ({}): {}",
            tree.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let after = unit_links(&etc)?;
    seal_etc(&etc)?;
    Ok(after.difference(&before).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fstab_with_entries_is_kept() {
        assert!(is_placeholder_fstab(
            "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n\n"
        ));
        assert!(!is_placeholder_fstab(
            "# data\nLABEL=data /srv ext4 defaults 0 2\n"
        ));
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("fstab"), "LABEL=data /srv ext4 defaults 0 2\n").unwrap();
        seal_etc(&etc).unwrap();
        assert!(etc.join("fstab").exists());
    }

    #[test]
    fn first_boot_rules_are_systemds() {
        assert!(systemd_sees_first_boot(None));
        assert!(systemd_sees_first_boot(Some(b"uninitialized\n")));
        assert!(systemd_sees_first_boot(Some(b"uninitialized")));
        assert!(!systemd_sees_first_boot(Some(b"")));
        assert!(!systemd_sees_first_boot(Some(b"\n")));
        assert!(!systemd_sees_first_boot(Some(
            b"0123456789abcdef0123456789abcdef\n"
        )));
    }

    #[test]
    fn debians_etc_would_run_preset_all_and_a_sealed_one_does_not() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        fs::create_dir_all(etc.join("systemd/system/multi-user.target.wants")).unwrap();
        // keel-image removes Debian's machine-id from the tree: a first boot.
        let e = check_etc(&etc).unwrap_err().to_string();
        assert!(e.contains("preset-all"), "{e}");
        fs::write(etc.join("machine-id"), "uninitialized\n").unwrap();
        assert!(check_etc(&etc).is_err());

        symlink(
            "/lib/systemd/system/ssh.service",
            etc.join("systemd/system/multi-user.target.wants/ssh.service"),
        )
        .unwrap();
        fs::write(etc.join("fstab"), "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n").unwrap();
        seal_etc(&etc).unwrap();
        check_etc(&etc).unwrap();
        assert!(!etc.join("fstab").exists(), "placeholder fstab kept");
        assert_eq!(fs::read(etc.join("machine-id")).unwrap(), b"");
        assert_eq!(
            fs::read_link(etc.join("systemd/system/systemd-firstboot.service")).unwrap(),
            Path::new("/dev/null")
        );
        let links = unit_links(&etc).unwrap();
        assert!(links.contains("multi-user.target.wants/ssh.service"));
        assert!(links.contains("systemd-firstboot.service"));
        // Idempotent: a second seal changes nothing.
        seal_etc(&etc).unwrap();
        assert_eq!(unit_links(&etc).unwrap(), links);
    }
}
