//! The A/B decision: which USR slot this boot mounts.
//!
//! Slots are tried in gptprio order ([`keel_gpt::prio::boot_order`]: the
//! bootable slot with the highest priority first, A before B on a tie). An
//! unproven slot loses a try before it is used, written to both GPT headers
//! (so a slot that hangs the boot runs out of tries). A slot that cannot be
//! used — no root hash on the kernel command line, the try cannot be
//! recorded, a bad verity superblock, dm-verity or the mount failing — is
//! recorded with the reason and the next one is tried, in the same boot.
//! No usable slot is an error (keel-init's emergency state).
//!
//! A slot is kernel + initramfs + `/usr` together: a mounted slot must hold
//! the modules of the running kernel ([`UsrSys::check_kernel`]). One that
//! does not (the firmware fell back to the other slot's kernel while the
//! GPT still chose this slot) is never run mixed: it is unmounted and the
//! other slot is tried in the same boot. When the loader entry named the
//! running kernel's slot (`keel.usr=`) and it is the other one, the slot
//! is also marked bad (priority 0, no tries, unproven, in both headers),
//! so later boots do not try it again until an updater's `set-next`.
//!
//! The decision is pure over [`UsrSys`] (the disk, dm-verity and the mount);
//! [`Real`] is the kernel, the tests use a fake over an in-memory disk.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use keel_contract::boot_record::SlotFailure;
use keel_contract::{KeelParams, Slot};
use keel_gpt::prio::{boot_order, Prio};
use keel_gpt::Gpt;
use nix::mount::{mount, umount, MsFlags};
use tracing::{info, warn};

use crate::boot::Disk;
use crate::dm::Control;
use crate::verity::{Superblock, SUPERBLOCK_SIZE};

/// Name of the device-mapper device for /usr.
pub const DM_NAME: &str = "usr";

/// The effects of the slot choice.
pub trait UsrSys {
    /// Disk: write `gpt` to both headers of the boot disk (a try consumed).
    fn write_table(&mut self, gpt: &Gpt) -> Result<()>;
    /// Verity: read the dm-verity superblock on the hash partition.
    fn read_superblock(&mut self, hash_dev: &str) -> Result<Superblock>;
    /// Verity: map `usr` through dm-verity with `root_hash`; returns the
    /// mapped device's node. On failure nothing stays mapped.
    fn open_verity(
        &mut self,
        usr: &str,
        hash_dev: &str,
        sb: &Superblock,
        root_hash: &str,
    ) -> Result<String>;
    /// Mount: the verified device read-only on `<sysroot>/usr` and read
    /// systemd through it (data that does not match the root hash fails
    /// here). On failure nothing stays mounted.
    fn mount_usr(&mut self, dm_node: &str, usr: &str) -> Result<()>;
    /// Verity: remove the mapping again (after a failed mount).
    fn close_verity(&mut self);
    /// Kernel: whether the mounted `/usr` holds the running kernel's
    /// modules; `Err(KernelMismatch)` when it does not.
    fn check_kernel(&mut self) -> Result<(), KernelMismatch>;
    /// Mount: unmount `<sysroot>/usr` again (after a failed check).
    fn unmount_usr(&mut self);
}

/// A slot whose `/usr` does not belong to the running kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{usr} holds no modules for the running kernel {release} ({detail}): this kernel belongs to the other slot; refusing to run a mixed system")]
pub struct KernelMismatch {
    /// The `/usr` checked (filled in by the caller).
    pub usr: String,
    /// `uname -r`.
    pub release: String,
    /// What is missing or different.
    pub detail: String,
}

/// A USR slot opened through dm-verity and mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedUsr {
    /// The USR partition.
    pub usr: String,
    /// Its verity hash partition.
    pub hash_dev: String,
    /// The root hash it was verified against.
    pub root_hash: String,
}

/// The outcome of the A/B decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotChoice {
    /// The booted slot.
    pub slot: Slot,
    /// Whether this boot consumed one of its tries.
    pub consumed_try: bool,
    /// What was mounted.
    pub opened: OpenedUsr,
    /// Slots tried first, with reasons.
    pub failures: Vec<SlotFailure>,
}

/// Open `slot` through dm-verity and mount it. On failure nothing stays
/// mounted or mapped.
pub fn open_usr(
    disk: &Disk,
    slot: Slot,
    cmd: &KeelParams,
    sys: &mut impl UsrSys,
) -> Result<OpenedUsr> {
    let usr = disk.node_of(slot.label())?;
    let hash_dev = disk.node_of(slot.verity_label())?;
    let root_hash = cmd.usrhash(slot).ok_or_else(|| {
        anyhow!(
            "no root hash for {} on the kernel command line ({}=): refusing to mount unverified data",
            slot.label(),
            keel_contract::cmdline::usrhash_param(slot)
        )
    })?;
    let sb = sys.read_superblock(&hash_dev)?;
    let part_bytes = disk
        .gpt
        .by_name(slot.label())
        .map(|p| p.sectors() * disk.gpt.sector_size)
        .unwrap_or(0);
    if sb.data_bytes() > part_bytes {
        bail!(
            "verity superblock on {hash_dev} covers {} bytes, more than {usr} holds ({part_bytes})",
            sb.data_bytes()
        );
    }
    let dm_node = sys.open_verity(&usr, &hash_dev, &sb, root_hash)?;
    if let Err(e) = sys.mount_usr(&dm_node, &usr) {
        sys.close_verity();
        return Err(e);
    }
    if let Err(mut e) = sys.check_kernel() {
        sys.unmount_usr();
        sys.close_verity();
        e.usr = format!("{} ({usr})", slot.label());
        return Err(e.into());
    }
    Ok(OpenedUsr {
        usr,
        hash_dev,
        root_hash: root_hash.to_string(),
    })
}

/// Consume a try of an unproven `slot` in `disk.gpt` and write the table.
/// Returns whether a try was consumed.
fn consume_try(disk: &mut Disk, slot: Slot, sys: &mut impl UsrSys) -> Result<bool> {
    let label = slot.label();
    let number = disk
        .gpt
        .by_name(label)
        .map(|p| p.number)
        .ok_or_else(|| anyhow!("no partition labelled {label}"))?;
    let part = disk.gpt.by_number_mut(number)?;
    let mut prio = Prio::from_attributes(part.attributes);
    if !prio.consume_try() {
        return Ok(false);
    }
    let before = part.attributes;
    part.attributes = prio.apply(part.attributes)?;
    if let Err(e) = sys.write_table(&disk.gpt) {
        // Not booted, so not consumed: the table in memory stays what is
        // on disk.
        if let Ok(p) = disk.gpt.by_number_mut(number) {
            p.attributes = before;
        }
        return Err(e.context(format!(
            "recording a boot try of an unproven slot ({} tries would be left)",
            prio.tries
        )));
    }
    info!(
        "{label}: trying an unproven slot, {} tries left",
        prio.tries
    );
    Ok(true)
}

/// Give `slot` priority 0, no tries and no success flag, in both headers.
fn mark_bad(disk: &mut Disk, slot: Slot, sys: &mut impl UsrSys) -> Result<()> {
    let label = slot.label();
    let number = disk
        .gpt
        .by_name(label)
        .map(|p| p.number)
        .ok_or_else(|| anyhow!("no partition labelled {label}"))?;
    let part = disk.gpt.by_number_mut(number)?;
    let bad = Prio {
        priority: 0,
        tries: 0,
        successful: false,
    };
    if Prio::from_attributes(part.attributes) == bad {
        return Ok(());
    }
    part.attributes = bad.apply(part.attributes)?;
    sys.write_table(&disk.gpt)
}

/// The A/B decision: try slots in gptprio order; an unproven slot loses a
/// try (written to both GPT headers) before it is used; a slot that cannot
/// be used is recorded and the next one is tried.
pub fn choose_and_mount_usr(
    disk: &mut Disk,
    cmd: &KeelParams,
    sys: &mut impl UsrSys,
) -> Result<SlotChoice> {
    let slots: Vec<(Slot, Prio)> = Slot::ALL
        .iter()
        .filter_map(|s| {
            disk.gpt
                .by_name(s.label())
                .map(|p| (*s, Prio::from_attributes(p.attributes)))
        })
        .collect();
    let order = boot_order(&slots);
    for (s, p) in &slots {
        if !order.contains(s) {
            info!("{} is not bootable ({p})", s.label());
        }
    }
    let mut failures = Vec::new();
    for slot in order {
        let attempt = consume_try(disk, slot, sys)
            .and_then(|consumed| open_usr(disk, slot, cmd, sys).map(|opened| (consumed, opened)));
        match attempt {
            Ok((consumed_try, opened)) => {
                return Ok(SlotChoice {
                    slot,
                    consumed_try,
                    opened,
                    failures,
                })
            }
            Err(e) => {
                let mut reason = format!("{e:#}");
                // Marked bad only when the loader entry said the running
                // kernel is the other slot's: then this slot cannot run
                // under it, and the firmware will pick that kernel again.
                if e.downcast_ref::<KernelMismatch>().is_some()
                    && cmd.kernel_slot == Some(slot.other())
                {
                    match mark_bad(disk, slot, sys) {
                        Ok(()) => reason.push_str("; marked bad"),
                        Err(w) => reason.push_str(&format!("; marking it bad failed: {w:#}")),
                    }
                }
                warn!("{}: not usable: {reason}", slot.label());
                failures.push(SlotFailure { slot, reason });
            }
        }
    }
    if failures.is_empty() {
        let states: Vec<String> = slots
            .iter()
            .map(|(s, p)| format!("{} {p}", s.label()))
            .collect();
        bail!("no bootable USR slot ({})", states.join(", "));
    }
    let detail: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.slot.label(), f.reason))
        .collect();
    bail!(
        "no USR slot could be verified and mounted: {}",
        detail.join("; ")
    )
}

/// The kernel: the boot disk's node, dm-verity through `/dev/mapper/control`,
/// mount(2) on `<sysroot>/usr`.
#[derive(Debug)]
pub struct Real {
    /// The boot disk (`/dev/vda`).
    pub disk: String,
    /// Where the new root is assembled.
    pub sysroot: PathBuf,
    ctl: Option<Control>,
}

impl Real {
    /// The real side for `disk`, mounting under `sysroot`.
    pub fn new(disk: &str, sysroot: &Path) -> Self {
        Real {
            disk: disk.to_string(),
            sysroot: sysroot.to_path_buf(),
            ctl: None,
        }
    }
}

fn devnum(node: &str) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(node).with_context(|| format!("stat {node}"))?;
    let rdev = m.rdev();
    Ok(format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    ))
}

fn dev_node(major: u32, minor: u32) -> Result<String> {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .with_context(|| format!("reading uevent of {major}:{minor}"))?;
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .ok_or_else(|| anyhow!("no DEVNAME for block device {major}:{minor}"))?;
    let node = format!("/dev/{name}");
    // devtmpfs creates the node asynchronously; wait briefly for it.
    for _ in 0..100 {
        if Path::new(&node).exists() {
            return Ok(node);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{node} did not appear")
}

impl UsrSys for Real {
    fn write_table(&mut self, gpt: &Gpt) -> Result<()> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.disk)
            .with_context(|| format!("opening {} to record a boot try", self.disk))?;
        gpt.write(&mut f)
            .with_context(|| format!("writing the GPT of {}", self.disk))
    }

    fn read_superblock(&mut self, hash_dev: &str) -> Result<Superblock> {
        let mut sb = vec![0u8; SUPERBLOCK_SIZE];
        File::open(hash_dev)
            .and_then(|mut f| f.read_exact(&mut sb))
            .with_context(|| format!("reading the verity superblock of {hash_dev}"))?;
        Ok(Superblock::parse(hash_dev, &sb)?)
    }

    fn open_verity(
        &mut self,
        usr: &str,
        hash_dev: &str,
        sb: &Superblock,
        root_hash: &str,
    ) -> Result<String> {
        let (sectors, params) = sb.table(&devnum(usr)?, &devnum(hash_dev)?, root_hash);
        let ctl = match self.ctl.take() {
            Some(c) => c,
            None => Control::open()?,
        };
        let ctl = self.ctl.insert(ctl);
        let dev = ctl.create_readonly(DM_NAME, "verity", sectors, &params)?;
        match dev_node(dev.major, dev.minor) {
            Ok(node) => Ok(node),
            Err(e) => {
                // Before, the mapping stayed and the other slot's
                // create failed on the name.
                let _ = ctl.remove(DM_NAME);
                Err(e)
            }
        }
    }

    fn mount_usr(&mut self, dm_node: &str, usr: &str) -> Result<()> {
        let target = self.sysroot.join("usr");
        mount(
            Some(dm_node),
            &target,
            Some("erofs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| {
            let why = if e == nix::Error::EIO {
                " (dm-verity rejected the data: it does not match the root hash)"
            } else {
                ""
            };
            anyhow!(
                "mounting {dm_node} (dm-verity over {usr}) on {}: {e}{why}",
                target.display()
            )
        })?;
        // Read systemd through the verified device: a corrupted image shows
        // here as an I/O error from dm-verity instead of after switch_root.
        let init = target.join("lib/systemd/systemd");
        let mut buf = Vec::new();
        if let Err(e) = File::open(&init).and_then(|mut f| f.read_to_end(&mut buf)) {
            let _ = umount(&target);
            bail!(
                "reading {} through dm-verity from {usr}: {e}",
                init.display()
            );
        }
        Ok(())
    }

    fn close_verity(&mut self) {
        if let Some(ctl) = &self.ctl {
            let _ = ctl.remove(DM_NAME);
        }
    }

    fn check_kernel(&mut self) -> Result<(), KernelMismatch> {
        let uts = nix::sys::utsname::uname().map_err(|e| KernelMismatch {
            usr: String::new(),
            release: "?".into(),
            detail: format!("uname: {e}"),
        })?;
        let release = uts.release().to_string_lossy().into_owned();
        let version = uts.version().to_string_lossy().into_owned();
        let dir = self.sysroot.join("usr/lib/modules").join(&release);
        let recorded = std::fs::read_to_string(dir.join(KERNEL_BUILD_FILE)).ok();
        kernel_matches(
            &release,
            &version,
            dir.join("modules.dep").is_file(),
            recorded.as_deref(),
        )
    }

    fn unmount_usr(&mut self) {
        let _ = umount(&self.sysroot.join("usr"));
    }
}

/// The file in `/usr/lib/modules/<release>/` where keel-image records the
/// kernel's build (`uname -v`, from the bzImage header), so two builds of
/// one release (a Debian upload that kept the ABI name) are told apart.
pub const KERNEL_BUILD_FILE: &str = "keel-kernel-build";

/// The check itself: the release's modules are there, and the recorded
/// build (when the image recorded one) is the running kernel's.
pub fn kernel_matches(
    release: &str,
    version: &str,
    has_modules: bool,
    recorded_build: Option<&str>,
) -> Result<(), KernelMismatch> {
    let mismatch = |detail: String| KernelMismatch {
        usr: String::new(),
        release: release.to_string(),
        detail,
    };
    if !has_modules {
        return Err(mismatch(format!(
            "no /usr/lib/modules/{release}/modules.dep"
        )));
    }
    match recorded_build.map(str::trim) {
        Some(b) if !b.is_empty() && b != version => Err(mismatch(format!(
            "its modules are of build {b:?}, the kernel is {version:?}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use keel_gpt::{types, Partition, Uuid};

    use super::*;

    const MIB: u64 = 1 << 20;
    const SS: u64 = 512;
    const H_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const H_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn attrs(priority: u64, tries: u64, successful: bool) -> u64 {
        priority << 48 | tries << 52 | u64::from(successful) << 56
    }

    /// Keel's layout in miniature: USR-A (2), its verity (3), USR-B (4),
    /// its verity (5), ROOT (7), each 1 MiB.
    fn image(a: u64, b: u64) -> Vec<u8> {
        let size = 8 * MIB;
        let mut disk = vec![0u8; size as usize];
        let mut g = Gpt::new(size, SS).unwrap();
        for (number, name, t, attributes) in [
            (2, "USR-A", types::USR_X86_64, a),
            (3, "USR-A-VERITY", types::USR_VERITY_X86_64, 0),
            (4, "USR-B", types::USR_X86_64, b),
            (5, "USR-B-VERITY", types::USR_VERITY_X86_64, 0),
            (7, "ROOT", types::ROOT_X86_64, 0),
        ] {
            let first = 2048 * u64::from(number - 1);
            g.set_partition(Partition {
                number,
                type_guid: t,
                unique_guid: Uuid::new_v4(),
                first_lba: first,
                last_lba: first + 2047,
                attributes,
                name: name.into(),
            })
            .unwrap();
        }
        g.write_protective_mbr(&mut disk).unwrap();
        g.write(&mut disk).unwrap();
        disk
    }

    fn disk_of(dev: &[u8]) -> Disk {
        let (gpt, _) = Gpt::read(&dev.to_vec(), SS).unwrap();
        let parts: BTreeMap<u32, String> = gpt
            .partitions
            .iter()
            .map(|p| (p.number, format!("/dev/vda{}", p.number)))
            .collect();
        Disk {
            node: "/dev/vda".into(),
            gpt,
            parts,
        }
    }

    fn params(a: bool, b: bool) -> KeelParams {
        KeelParams {
            usrhash_a: a.then(|| H_A.to_string()),
            usrhash_b: b.then(|| H_B.to_string()),
            ..KeelParams::default()
        }
    }

    fn sb(data_blocks: u64) -> Superblock {
        Superblock {
            hash_type: 1,
            algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks,
            salt: vec![1, 2, 3],
        }
    }

    /// What the fake was asked to do, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        WriteTable,
        ReadSuperblock(String),
        OpenVerity(String, String, String),
        Mount(String),
        CloseVerity,
        Unmount,
    }

    /// An in-memory disk; verity and mount succeed unless told otherwise.
    struct Fake {
        dev: Vec<u8>,
        calls: Vec<Call>,
        fail_write: bool,
        /// USR devices whose data dm-verity rejects at mount time.
        corrupt: Vec<String>,
        /// Hash devices without a superblock.
        no_superblock: Vec<String>,
        data_blocks: u64,
        mapped: bool,
        mounted: Option<String>,
        /// USR devices without the running kernel's modules.
        foreign_kernel: Vec<String>,
    }

    impl Fake {
        fn new(dev: Vec<u8>) -> Self {
            Fake {
                dev,
                calls: Vec::new(),
                fail_write: false,
                corrupt: Vec::new(),
                no_superblock: Vec::new(),
                data_blocks: 256,
                mapped: false,
                mounted: None,
                foreign_kernel: Vec::new(),
            }
        }
    }

    impl UsrSys for Fake {
        fn write_table(&mut self, gpt: &Gpt) -> Result<()> {
            self.calls.push(Call::WriteTable);
            if self.fail_write {
                bail!("writing the GPT of /dev/vda: Read-only file system (os error 30)");
            }
            gpt.write(&mut self.dev)?;
            Ok(())
        }
        fn read_superblock(&mut self, hash_dev: &str) -> Result<Superblock> {
            self.calls.push(Call::ReadSuperblock(hash_dev.into()));
            if self.no_superblock.iter().any(|d| d == hash_dev) {
                bail!(
                    "{hash_dev}: no dm-verity superblock (signature at byte 0 is not \"verity\")"
                );
            }
            Ok(sb(self.data_blocks))
        }
        fn open_verity(
            &mut self,
            usr: &str,
            hash_dev: &str,
            _sb: &Superblock,
            root_hash: &str,
        ) -> Result<String> {
            assert!(!self.mapped, "a second mapping while one exists");
            self.calls.push(Call::OpenVerity(
                usr.into(),
                hash_dev.into(),
                root_hash.into(),
            ));
            self.mapped = true;
            Ok("/dev/dm-0".into())
        }
        fn mount_usr(&mut self, dm_node: &str, usr: &str) -> Result<()> {
            self.calls.push(Call::Mount(usr.into()));
            if self.corrupt.iter().any(|d| d == usr) {
                bail!("mounting {dm_node} (dm-verity over {usr}) on /sysroot/usr: EIO: I/O error (dm-verity rejected the data: it does not match the root hash)");
            }
            self.mounted = Some(usr.into());
            Ok(())
        }
        fn close_verity(&mut self) {
            self.calls.push(Call::CloseVerity);
            self.mapped = false;
        }
        fn check_kernel(&mut self) -> Result<(), KernelMismatch> {
            let m = self.mounted.clone().unwrap_or_default();
            if self.foreign_kernel.contains(&m) {
                return Err(kernel_matches("6.1.0-99-amd64", "#1", false, None).unwrap_err());
            }
            Ok(())
        }
        fn unmount_usr(&mut self) {
            self.calls.push(Call::Unmount);
            self.mounted = None;
        }
    }

    fn prio_on_disk(dev: &[u8], label: &str) -> Prio {
        let (g, _) = Gpt::read(&dev.to_vec(), SS).unwrap();
        Prio::from_attributes(g.by_name(label).unwrap().attributes)
    }

    /// The backup header's view: the primary header destroyed in a copy.
    fn backup_prio(dev: &[u8], label: &str) -> Prio {
        let mut d = dev.to_vec();
        d[SS as usize..2 * SS as usize].fill(0);
        let (g, report) = Gpt::read(&d, SS).unwrap();
        assert!(report.primary_error.is_some());
        Prio::from_attributes(g.by_name(label).unwrap().attributes)
    }

    fn p(priority: u8, tries: u8, successful: bool) -> Prio {
        Prio {
            priority,
            tries,
            successful,
        }
    }

    fn run(
        dev: Vec<u8>,
        cmd: &KeelParams,
        tweak: impl FnOnce(&mut Fake),
    ) -> (Result<SlotChoice>, Fake) {
        let mut disk = disk_of(&dev);
        let mut fake = Fake::new(dev);
        tweak(&mut fake);
        let r = choose_and_mount_usr(&mut disk, cmd, &mut fake);
        (r, fake)
    }

    #[test]
    fn a_slot_without_the_running_kernel_s_modules_is_marked_bad_and_the_other_boots() {
        // B on trial (the update), but the firmware ran A's kernel (B's
        // entry ran out of tries): B must not run under A's kernel.
        let dev = image(attrs(1, 0, true), attrs(2, 1, false));
        let cmd = KeelParams {
            kernel_slot: Some(Slot::A),
            ..params(true, true)
        };
        let (r, f) = run(dev, &cmd, |f| {
            f.foreign_kernel.push("/dev/vda4".into());
        });
        let c = r.unwrap();
        assert_eq!(c.slot, Slot::A);
        assert_eq!(f.mounted.as_deref(), Some("/dev/vda2"));
        assert_eq!(c.failures.len(), 1);
        let why = &c.failures[0].reason;
        assert!(
            why.contains(
                "USR-B (/dev/vda4) holds no modules for the running kernel 6.1.0-99-amd64"
            ) && why.contains("mixed system")
                && why.ends_with("marked bad"),
            "{why}"
        );
        // B was unmounted and unmapped before A was opened.
        let i = f.calls.iter().position(|c| *c == Call::Unmount).unwrap();
        assert_eq!(f.calls[i + 1], Call::CloseVerity);
        assert_eq!(prio_on_disk(&f.dev, "USR-B"), p(0, 0, false));
        assert_eq!(backup_prio(&f.dev, "USR-B"), p(0, 0, false));
        assert_eq!(prio_on_disk(&f.dev, "USR-A"), p(1, 0, true));
    }

    #[test]
    fn without_keel_usr_a_mismatch_falls_back_but_marks_nothing() {
        // A direct -kernel boot: which slot the kernel belongs to is not
        // known, so the table keeps B's state.
        let dev = image(attrs(1, 0, true), attrs(2, 1, false));
        let (r, f) = run(dev, &params(true, true), |f| {
            f.foreign_kernel.push("/dev/vda4".into());
        });
        let c = r.unwrap();
        assert_eq!(c.slot, Slot::A);
        assert!(!c.failures[0].reason.contains("marked bad"));
        assert_eq!(prio_on_disk(&f.dev, "USR-B"), p(2, 0, false));
    }

    #[test]
    fn no_slot_matching_the_kernel_is_an_error_naming_both() {
        let dev = image(attrs(1, 0, true), attrs(2, 1, false));
        let (r, f) = run(dev, &params(true, true), |f| {
            f.foreign_kernel = vec!["/dev/vda2".into(), "/dev/vda4".into()];
        });
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("USR-A (/dev/vda2) holds no modules")
                && e.contains("USR-B (/dev/vda4) holds no modules"),
            "{e}"
        );
        assert!(f.mounted.is_none() && !f.mapped);
    }

    #[test]
    fn kernel_match_rules() {
        assert!(kernel_matches("6.1.0-28-amd64", "#1 SMP Debian 6.1.119-1", true, None).is_ok());
        assert!(kernel_matches("r", "#1 v1", true, Some("#1 v1\n")).is_ok());
        assert!(kernel_matches("r", "#1 v1", true, Some("")).is_ok());
        let e = kernel_matches("r", "#1 v2", true, Some("#1 v1")).unwrap_err();
        assert!(
            e.to_string()
                .contains("build \"#1 v1\", the kernel is \"#1 v2\""),
            "{e}"
        );
        let e = kernel_matches("6.1.0-28-amd64", "#1", false, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("no /usr/lib/modules/6.1.0-28-amd64/modules.dep"),
            "{e}"
        );
    }

    #[test]
    fn fresh_image_boots_a_without_writing() {
        let dev = image(attrs(1, 0, true), 0);
        let before = dev.clone();
        let (r, f) = run(dev, &params(true, false), |_| {});
        let c = r.unwrap();
        assert_eq!((c.slot, c.consumed_try), (Slot::A, false));
        assert!(c.failures.is_empty());
        assert_eq!(
            c.opened,
            OpenedUsr {
                usr: "/dev/vda2".into(),
                hash_dev: "/dev/vda3".into(),
                root_hash: H_A.into()
            }
        );
        assert_eq!(
            f.calls,
            vec![
                Call::ReadSuperblock("/dev/vda3".into()),
                Call::OpenVerity("/dev/vda2".into(), "/dev/vda3".into(), H_A.into()),
                Call::Mount("/dev/vda2".into()),
            ]
        );
        assert!(f.dev == before, "a proven slot's boot wrote the disk");
    }

    #[test]
    fn highest_priority_wins() {
        let (r, f) = run(
            image(attrs(1, 0, true), attrs(3, 0, true)),
            &params(true, true),
            |_| {},
        );
        let c = r.unwrap();
        assert_eq!(c.slot, Slot::B);
        assert_eq!(c.opened.usr, "/dev/vda4");
        assert_eq!(c.opened.root_hash, H_B);
        assert_eq!(f.mounted.as_deref(), Some("/dev/vda4"));
        assert!(!f.calls.contains(&Call::WriteTable));
    }

    #[test]
    fn unproven_slot_on_trial_consumes_a_try_in_both_headers() {
        let dev = image(attrs(1, 0, true), attrs(2, 3, false));
        let (r, f) = run(dev, &params(true, true), |_| {});
        let c = r.unwrap();
        assert_eq!((c.slot, c.consumed_try), (Slot::B, true));
        // The try is on disk before anything of the slot is read.
        assert_eq!(f.calls[0], Call::WriteTable);
        assert_eq!(prio_on_disk(&f.dev, "USR-B"), p(2, 2, false));
        assert_eq!(backup_prio(&f.dev, "USR-B"), p(2, 2, false));
        // Everything else as it was.
        assert_eq!(prio_on_disk(&f.dev, "USR-A"), p(1, 0, true));
        assert_eq!(backup_prio(&f.dev, "USR-A"), p(1, 0, true));
    }

    #[test]
    fn last_try_is_used_then_the_slot_is_exhausted() {
        let dev = image(attrs(1, 0, true), attrs(2, 1, false));
        let (r, f) = run(dev, &params(true, true), |_| {});
        assert_eq!(r.unwrap().slot, Slot::B);
        assert_eq!(prio_on_disk(&f.dev, "USR-B"), p(2, 0, false));
        // The next boot (B never proven): B is exhausted, A boots, no write.
        let (r, f2) = run(f.dev.clone(), &params(true, true), |_| {});
        let c = r.unwrap();
        assert_eq!((c.slot, c.consumed_try), (Slot::A, false));
        assert!(c.failures.is_empty(), "an exhausted slot is not a failure");
        assert!(!f2.calls.contains(&Call::WriteTable));
        assert!(f2.dev == f.dev);
    }

    #[test]
    fn verity_failure_falls_back_in_the_same_boot() {
        let dev = image(attrs(1, 0, true), attrs(2, 1, false));
        let (r, f) = run(dev, &params(true, true), |f| {
            f.corrupt = vec!["/dev/vda4".into()]
        });
        let c = r.unwrap();
        assert_eq!((c.slot, c.consumed_try), (Slot::A, false));
        assert_eq!(c.failures.len(), 1);
        assert_eq!(c.failures[0].slot, Slot::B);
        assert!(
            c.failures[0].reason.contains("dm-verity"),
            "{:?}",
            c.failures
        );
        // B's mapping was removed before A's was made; B's try stays used.
        assert_eq!(
            f.calls,
            vec![
                Call::WriteTable,
                Call::ReadSuperblock("/dev/vda5".into()),
                Call::OpenVerity("/dev/vda4".into(), "/dev/vda5".into(), H_B.into()),
                Call::Mount("/dev/vda4".into()),
                Call::CloseVerity,
                Call::ReadSuperblock("/dev/vda3".into()),
                Call::OpenVerity("/dev/vda2".into(), "/dev/vda3".into(), H_A.into()),
                Call::Mount("/dev/vda2".into()),
            ]
        );
        assert_eq!(prio_on_disk(&f.dev, "USR-B"), p(2, 0, false));
        assert_eq!(f.mounted.as_deref(), Some("/dev/vda2"));
    }

    #[test]
    fn a_proven_slot_that_fails_verification_keeps_its_priority() {
        // DESIGN.md: left as is; every boot tries it first and falls back.
        let dev = image(attrs(1, 0, true), attrs(2, 0, true));
        let (r, f) = run(dev, &params(true, true), |f| {
            f.corrupt = vec!["/dev/vda4".into()]
        });
        assert_eq!(r.unwrap().slot, Slot::A);
        assert_eq!(prio_on_disk(&f.dev, "USR-B"), p(2, 0, true));
        assert!(!f.calls.contains(&Call::WriteTable));
    }

    #[test]
    fn both_bad_is_an_error_naming_both() {
        let dev = image(attrs(1, 0, true), attrs(2, 1, false));
        let (r, f) = run(dev, &params(true, true), |f| {
            f.corrupt = vec!["/dev/vda4".into()];
            f.no_superblock = vec!["/dev/vda3".into()];
        });
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.starts_with("no USR slot could be verified and mounted: USR-B: mounting /dev/dm-0"),
            "{e}"
        );
        assert!(
            e.contains("; USR-A: /dev/vda3: no dm-verity superblock"),
            "{e}"
        );
        assert!(!f.mapped && f.mounted.is_none());
    }

    #[test]
    fn no_bootable_slot_is_an_error_naming_the_states() {
        let dev = image(attrs(1, 0, false), attrs(0, 5, true));
        let (r, f) = run(dev, &params(true, true), |_| {});
        assert_eq!(
            format!("{:#}", r.unwrap_err()),
            "no bootable USR slot (USR-A priority=1 tries=0 successful=0, USR-B priority=0 tries=5 successful=1)"
        );
        assert!(f.calls.is_empty());
    }

    #[test]
    fn damaged_primary_header_boots_from_the_backup() {
        let mut dev = image(attrs(1, 0, true), attrs(2, 1, false));
        dev[SS as usize + 16] ^= 0xff; // the primary header's CRC field
        let (_, report) = Gpt::read(&dev, SS).unwrap();
        assert!(report.primary_error.is_some());
        let mut disk = disk_of(&dev);
        let mut f = Fake::new(dev);
        let c = choose_and_mount_usr(&mut disk, &params(true, true), &mut f).unwrap();
        assert_eq!((c.slot, c.consumed_try), (Slot::B, true));
        // Recording the try writes both headers from the good copy.
        let (_, report) = Gpt::read(&f.dev, SS).unwrap();
        assert!(report.primary_error.is_none() && report.backup_error.is_none());
        assert_eq!(prio_on_disk(&f.dev, "USR-B"), p(2, 0, false));
        assert_eq!(backup_prio(&f.dev, "USR-B"), p(2, 0, false));
    }

    #[test]
    fn damaged_primary_header_and_a_proven_slot_writes_nothing() {
        let mut dev = image(attrs(1, 0, true), 0);
        dev[SS as usize + 16] ^= 0xff;
        let before = dev.clone();
        let (r, f) = run(dev, &params(true, true), |_| {});
        assert_eq!(r.unwrap().slot, Slot::A);
        assert!(f.dev == before);
    }

    #[test]
    fn equal_priorities_take_a_first() {
        let (r, _) = run(
            image(attrs(2, 0, true), attrs(2, 0, true)),
            &params(true, true),
            |_| {},
        );
        assert_eq!(r.unwrap().slot, Slot::A);
        // Also when A is the unproven one: table order, not proven first.
        let (r, f) = run(
            image(attrs(2, 1, false), attrs(2, 0, true)),
            &params(true, true),
            |_| {},
        );
        let c = r.unwrap();
        assert_eq!((c.slot, c.consumed_try), (Slot::A, true));
        assert_eq!(prio_on_disk(&f.dev, "USR-A"), p(2, 0, false));
    }

    #[test]
    fn slot_without_a_root_hash_is_never_mounted() {
        let (r, f) = run(
            image(attrs(1, 0, true), attrs(2, 0, true)),
            &params(true, false),
            |_| {},
        );
        let c = r.unwrap();
        assert_eq!(c.slot, Slot::A);
        assert_eq!(
            c.failures[0].reason,
            "no root hash for USR-B on the kernel command line (keel.usrhash.b=): refusing to mount unverified data"
        );
        assert!(!f
            .calls
            .iter()
            .any(|c| matches!(c, Call::OpenVerity(u, _, _) if u == "/dev/vda4")));
        // Neither has one: nothing is mounted.
        let (r, f) = run(image(attrs(1, 0, true), 0), &params(false, false), |_| {});
        assert!(format!("{:#}", r.unwrap_err()).contains("no root hash for USR-A"));
        assert!(f.calls.is_empty());
    }

    #[test]
    fn a_try_that_cannot_be_recorded_is_not_booted() {
        let dev = image(attrs(1, 0, true), attrs(2, 1, false));
        let before = dev.clone();
        let mut disk = disk_of(&dev);
        let mut f = Fake::new(dev);
        f.fail_write = true;
        let c = choose_and_mount_usr(&mut disk, &params(true, true), &mut f).unwrap();
        assert_eq!((c.slot, c.consumed_try), (Slot::A, false));
        assert!(
            c.failures[0]
                .reason
                .starts_with("recording a boot try of an unproven slot (0 tries would be left): "),
            "{:?}",
            c.failures
        );
        assert!(!f
            .calls
            .iter()
            .any(|c| matches!(c, Call::OpenVerity(u, _, _) if u == "/dev/vda4")));
        assert!(f.dev == before);
        // The table in memory is still the disk's.
        assert_eq!(
            Prio::from_attributes(disk.gpt.by_name("USR-B").unwrap().attributes),
            p(2, 1, false)
        );
    }

    #[test]
    fn superblock_larger_than_the_partition_is_refused() {
        let (r, f) = run(image(attrs(1, 0, true), 0), &params(true, true), |f| {
            f.data_blocks = 1024; // 4 MiB of data in a 1 MiB partition
        });
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("verity superblock on /dev/vda3 covers 4194304 bytes, more than /dev/vda2 holds (1048576)"),
            "{e}"
        );
        assert!(!f.mapped);
    }

    #[test]
    fn a_missing_partition_node_is_a_failure_of_that_slot() {
        let dev = image(attrs(1, 0, true), attrs(2, 0, true));
        let mut disk = disk_of(&dev);
        disk.parts.remove(&5);
        let mut f = Fake::new(dev);
        let c = choose_and_mount_usr(&mut disk, &params(true, true), &mut f).unwrap();
        assert_eq!(c.slot, Slot::A);
        assert_eq!(
            c.failures[0].reason,
            "partition USR-B-VERITY (5) has no device node"
        );
    }
}
