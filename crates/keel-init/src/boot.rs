//! The boot sequence itself: the effectful top level of keel-init.
//!
//! Each step is named; a failure carries the step and the device so the
//! console message says what failed where ([`BootError`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use keel_contract::paths::{self, under};
use keel_contract::{BootRecord, Cmdline, KeelParams};
use keel_gpt::{types, Gpt};
use nix::mount::{mount, MsFlags};
use tracing::{info, warn};

use crate::console::uptime;
use crate::slot::{OpenedUsr, SlotChoice};

/// Where the new root is assembled.
pub const SYSROOT: &str = "/sysroot";

/// A failed boot step.
#[derive(Debug)]
pub struct BootError {
    /// The step that failed.
    pub step: &'static str,
    /// The device involved, if any.
    pub device: Option<String>,
    /// What went wrong.
    pub source: anyhow::Error,
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.device {
            Some(d) => write!(f, "{}: {}: {:#}", self.step, d, self.source),
            None => write!(f, "{}: {:#}", self.step, self.source),
        }
    }
}

trait StepExt<T> {
    fn step(self, step: &'static str, device: Option<&str>) -> Result<T, BootError>;
}

impl<T> StepExt<T> for Result<T> {
    fn step(self, step: &'static str, device: Option<&str>) -> Result<T, BootError> {
        self.map_err(|source| BootError {
            step,
            device: device.map(str::to_string),
            source,
        })
    }
}

/// The boot disk and its partitions.
#[derive(Debug)]
pub struct Disk {
    /// Device node, e.g. /dev/vda.
    pub node: String,
    /// The table.
    pub gpt: Gpt,
    /// Partition number → device node.
    pub parts: BTreeMap<u32, String>,
}

impl Disk {
    /// Device node of the partition labelled `label`, or an error naming it.
    pub fn node_of(&self, label: &str) -> Result<String> {
        let p = self
            .gpt
            .by_name(label)
            .ok_or_else(|| anyhow!("no partition labelled {label} on {}", self.node))?;
        self.parts
            .get(&p.number)
            .cloned()
            .ok_or_else(|| anyhow!("partition {label} ({}) has no device node", p.number))
    }
}

fn mnt(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<()> {
    fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    mount(Some(src), target, Some(fstype), flags, data)
        .with_context(|| format!("mounting {src} ({fstype}) on {target}"))
}

/// Step 1: /proc, /sys, /dev, /run.
pub fn mount_api() -> Result<()> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nse, None)?;
    mnt("sysfs", "/sys", "sysfs", nse, None)?;
    mnt(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mnt(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=20%,nr_inodes=800k"),
    )?;
    Ok(())
}

/// Step 2: load the initramfs's modules. A module that fails to load is a
/// warning: what needed it fails later with a message about the device.
pub fn load_modules() -> Result<usize> {
    let rel = nix::sys::utsname::uname()?
        .release()
        .to_string_lossy()
        .into_owned();
    let dir = PathBuf::from("/usr/lib/modules").join(&rel);
    let dep = fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
    let wanted: Vec<String> = fs::read_to_string(paths::INITRD_MODULES)
        .with_context(|| format!("reading {}", paths::INITRD_MODULES))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    // Modules of one dependency level are independent: load them in
    // parallel (finit_module is concurrent-safe; the signature check and
    // relocation of each module is CPU work that a second CPU halves).
    let levels = crate::modules::load_levels(&dep, &wanted)?;
    let loaded = std::sync::atomic::AtomicUsize::new(0);
    for level in &levels {
        std::thread::scope(|s| {
            for m in level {
                let path = dir.join(m);
                let loaded = &loaded;
                s.spawn(move || {
                    let f = match File::open(&path) {
                        Ok(f) => f,
                        Err(e) => {
                            warn!("opening module {}: {e}", path.display());
                            return;
                        }
                    };
                    match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
                        Ok(()) => {
                            loaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(nix::Error::EEXIST) => {}
                        Err(e) => warn!("loading module {}: {e}", path.display()),
                    }
                });
            }
        });
    }
    let loaded = loaded.into_inner();
    Ok(loaded)
}

fn sys_read(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Whole disks under /sys/class/block that could hold Keel's GPT.
fn candidate_disks() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !Path::new("/sys/class/block")
                .join(n)
                .join("partition")
                .exists()
                && !n.starts_with("loop")
                && !n.starts_with("ram")
                && !n.starts_with("dm-")
                && !n.starts_with("sr")
        })
        .collect();
    v.sort();
    v
}

fn partitions_of(disk: &str) -> BTreeMap<u32, String> {
    let mut m = BTreeMap::new();
    let base = Path::new("/sys/class/block").join(disk);
    for e in fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = sys_read(&e.path().join("partition")).and_then(|s| s.parse().ok()) {
            m.insert(n, format!("/dev/{name}"));
        }
    }
    m
}

fn sector_size(disk: &str) -> u64 {
    sys_read(
        &Path::new("/sys/class/block")
            .join(disk)
            .join("queue/logical_block_size"),
    )
    .and_then(|s| s.parse().ok())
    .unwrap_or(512)
}

/// Tell the kernel the partitions of `gpt` on `node` (`BLKPG_ADD_PARTITION`).
fn add_partitions(f: &File, node: &str, gpt: &Gpt) {
    let ss = gpt.sector_size;
    let mut added = 0;
    for p in &gpt.partitions {
        match crate::blk::add_partition(f, p.number, p.first_lba * ss, p.sectors() * ss) {
            Ok(()) => added += 1,
            Err(e) => warn!(
                "{node}: adding partition {} ({}) to the kernel: {e}",
                p.number, p.name
            ),
        }
    }
    info!("{node}: the kernel found no valid primary GPT; told it {added} partitions from the backup GPT");
}

/// Step 3: wait (bounded) for a disk whose GPT has a USR-A partition of the
/// USR type, and for its partition nodes.
pub fn find_disk(timeout: Duration) -> Result<Disk> {
    let start = Instant::now();
    let mut last_problem = String::from("no block devices appeared");
    let mut warned = std::collections::BTreeSet::new();
    loop {
        for d in candidate_disks() {
            let node = format!("/dev/{d}");
            let Ok(f) = File::open(&node) else { continue };
            match Gpt::read(&f, sector_size(&d)) {
                Ok((gpt, report)) => {
                    if let Some(e) = &report.primary_error {
                        if warned.insert(node.clone()) {
                            warn!("{node}: using the backup GPT: {e}");
                            // The kernel reads the backup only with the
                            // `gpt` parameter: tell it the partitions from
                            // the validated backup (memory only; the disk
                            // is not written).
                            if partitions_of(&d).is_empty() {
                                add_partitions(&f, &node, &gpt);
                            }
                        }
                    }
                    let is_keel = gpt
                        .by_name("USR-A")
                        .is_some_and(|p| p.type_guid == types::USR_X86_64);
                    if !is_keel {
                        last_problem = format!("{node} has a GPT without a USR-A partition");
                        continue;
                    }
                    let parts = partitions_of(&d);
                    let want: Vec<u32> = gpt.partitions.iter().map(|p| p.number).collect();
                    if want
                        .iter()
                        .all(|n| parts.get(n).is_some_and(|p| Path::new(p).exists()))
                    {
                        return Ok(Disk { node, gpt, parts });
                    }
                    last_problem = format!("waiting for the partitions of {node}");
                }
                Err(e) => last_problem = format!("{node}: {e}"),
            }
        }
        if start.elapsed() >= timeout {
            bail!(
                "no disk with Keel's partition table (a USR-A partition) after {}s: {last_problem}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Make sure ROOT has the directories and /usr-merge links the system needs
/// ([`keel_contract::root::prepare`]; keel-image makes new images with it).
pub fn prepare_root(sysroot: &Path) -> Result<()> {
    Ok(keel_contract::root::prepare(sysroot)?)
}

/// Mount `/etc` as an overlay: the factory defaults in USR below, the
/// machine's changes on ROOT above.
pub fn mount_etc(sysroot: &Path) -> Result<()> {
    let upper = under(sysroot, paths::ETC_UPPER);
    let work = under(sysroot, paths::ETC_WORK);
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;
    let lower = under(sysroot, paths::FACTORY_ETC);
    if !lower.is_dir() {
        bail!("{} is missing from USR", lower.display());
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let target = sysroot.join("etc");
    mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .with_context(|| format!("mounting the /etc overlay on {} ({opts})", target.display()))
}

fn remove_tree_same_dev(p: &Path, dev: u64) {
    let Ok(m) = p.symlink_metadata() else { return };
    if m.dev() != dev {
        return;
    }
    if m.is_dir() {
        for e in fs::read_dir(p).into_iter().flatten().flatten() {
            remove_tree_same_dev(&e.path(), dev);
        }
        let _ = fs::remove_dir(p);
    } else {
        let _ = fs::remove_file(p);
    }
}

/// Move the API mounts into the new root, free the initramfs, make
/// `/sysroot` the root and exec systemd. Returns only on failure.
pub fn switch_root(sysroot: &Path) -> anyhow::Error {
    let res = (|| -> Result<()> {
        for m in ["/dev", "/proc", "/sys", "/run"] {
            let target = sysroot.join(&m[1..]);
            mount(
                Some(m),
                &target,
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            )
            .with_context(|| format!("moving {m} to {}", target.display()))?;
        }
        let root_dev = fs::metadata("/")?.dev();
        for e in fs::read_dir("/")?.flatten() {
            if e.path() != sysroot {
                remove_tree_same_dev(&e.path(), root_dev);
            }
        }
        nix::unistd::chdir(sysroot)?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .context("moving /sysroot to /")?;
        nix::unistd::chroot(".")?;
        nix::unistd::chdir("/")?;
        Ok(())
    })();
    if let Err(e) = res {
        return e;
    }
    let init = c"/usr/lib/systemd/systemd";
    match nix::unistd::execv(init, &[init]) {
        Ok(never) => match never {},
        Err(e) => anyhow!("executing /usr/lib/systemd/systemd: {e}"),
    }
}

/// The whole boot up to switch_root. Returns the record written to boot.json.
pub fn run() -> Result<BootRecord, BootError> {
    let mut timings = BTreeMap::new();
    let mut mark = |name: &str| {
        timings.insert(name.to_string(), uptime().as_secs_f64());
    };
    mark("start");
    mount_api().step("mounting /proc, /sys, /dev, /run", None)?;
    let text = fs::read_to_string(keel_contract::cmdline::PROC_CMDLINE)
        .context("reading /proc/cmdline")
        .step("reading the kernel command line", None)?;
    let cmd = KeelParams::from_cmdline(&Cmdline::parse(&text))
        .map_err(anyhow::Error::from)
        .step("reading the kernel command line", None)?;
    let n = load_modules().step("loading kernel modules", None)?;
    info!("loaded {n} kernel modules");
    mark("modules");

    let mut disk = find_disk(cmd.disk_timeout).step("finding the boot disk", None)?;
    info!("boot disk {}", disk.node);
    mark("disk");

    let sysroot = Path::new(SYSROOT);
    let root = disk
        .node_of("ROOT")
        .step("mounting ROOT", Some(&disk.node))?;
    mnt(&root, SYSROOT, "ext4", MsFlags::empty(), None).step("mounting ROOT", Some(&root))?;
    prepare_root(sysroot).step("preparing ROOT", Some(&root))?;
    let first_boot = cmd.first_boot || !under(sysroot, paths::FIRST_BOOT_DONE).exists();
    info!(
        "mounted ROOT {root} on {SYSROOT}{}",
        if first_boot { " (first boot)" } else { "" }
    );
    mark("root");

    // Every boot: grow ROOT if the disk has room (re-detected from the disk,
    // so a cut first boot or a later-enlarged disk completes); first boot:
    // new disk GUID, ROOT partition GUID and filesystem UUID. Before the
    // slot choice, which writes the table back with the grown ROOT.
    let (mut grown, fs_job) = match crate::growth::open_disk(&disk.node) {
        Ok(mut dev) => crate::growth::run_table(
            &mut dev,
            &crate::growth::Real,
            &crate::growth::Target {
                disk: &disk.node,
                root: &root,
                mountpoint: sysroot,
                gpt: &disk.gpt,
                first_boot,
            },
        ),
        Err(e) => {
            warn!(
                "growth: opening {} read-write: {e}; not growing ROOT",
                disk.node
            );
            (crate::growth::Outcome::default(), None)
        }
    };
    if let Some(g) = grown.gpt.take() {
        disk.gpt = g;
    }
    // ext4 grows online on its own thread while USR is verified and
    // mounted; joined before the first-boot marker.
    let mut fs_thread = fs_job.map(|job| std::thread::spawn(move || job.run(&crate::growth::Real)));
    let mut join_fs = |grown: &mut crate::growth::Outcome| {
        if let Some(h) = fs_thread.take() {
            let w = Instant::now();
            let fs = h.join().unwrap_or_else(|_| crate::growth::FsOutcome {
                problems: vec!["the filesystem growth thread panicked".into()],
                ..Default::default()
            });
            grown.merge(fs);
            if let Some(g) = grown.growth.as_mut() {
                g.wait_ms = w.elapsed().as_secs_f64() * 1000.0;
                info!(
                    "growth: added {:.1} ms to the boot (table {:.1}, kernel {:.1}, waiting for ext4 {:.1})",
                    g.table_ms + g.kernel_ms + g.wait_ms,
                    g.table_ms,
                    g.kernel_ms,
                    g.wait_ms
                );
            }
        }
    };
    mark("growth");

    let node = disk.node.clone();
    let SlotChoice {
        slot,
        consumed_try,
        opened:
            OpenedUsr {
                usr,
                hash_dev: usr_verity,
                root_hash: hash,
            },
        failures: failed_slots,
    } = crate::slot::choose_and_mount_usr(
        &mut disk,
        &cmd,
        &mut crate::slot::Real::new(&node, sysroot),
    )
    .step("opening USR", Some(&node))?;
    info!("mounted USR-{slot} ({usr}, verified by {usr_verity}) on {SYSROOT}/usr read-only");
    mark("usr");

    match disk.node_of("OEM") {
        Ok(oem) => {
            mnt(
                &oem,
                &format!("{SYSROOT}/oem"),
                "ext4",
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                None,
            )
            .step("mounting OEM", Some(&oem))?;
            info!("mounted OEM {oem} on {SYSROOT}/oem read-only");
        }
        Err(e) => warn!("no OEM partition: {e:#}; continuing without /oem"),
    }
    mount_etc(sysroot).step("assembling /etc", None)?;
    mark("etc");

    if first_boot {
        // Provisioning (Ignition / cloud-config) applies whole or not at all;
        // on error nothing of the config is on ROOT and the boot stops here.
        let fb = keel_provision::FirstBoot::standard(text.clone());
        match keel_provision::first_boot(&fb, &keel_provision::sys::Real) {
            Ok(keel_provision::Outcome::Applied(r)) => info!(
                "provisioned from {} ({}) in {:.1} ms",
                r.source,
                r.format,
                r.duration_us as f64 / 1000.0
            ),
            Ok(keel_provision::Outcome::AlreadyProvisioned) => {
                info!("provisioning already done on this machine")
            }
            Err(e) => {
                return Err(BootError {
                    step: "first-boot provisioning",
                    device: None,
                    source: anyhow!("{e}"),
                })
            }
        }
        mark("provision");
        join_fs(&mut grown);
        keel_contract::write_atomic(&under(sysroot, paths::FIRST_BOOT_DONE), b"")
            .context("writing the first-boot marker")
            .step("recording first boot", Some(&root))?;
    }
    join_fs(&mut grown);
    mark("switch_root");
    let record = BootRecord {
        kernel_slot: cmd.kernel_slot,
        first_boot,
        usr_device: usr,
        usr_verity_device: usr_verity,
        usr_root_hash: hash,
        consumed_try,
        failed_slots,
        timings,
        growth: grown.growth,
        identity: grown.identity,
        ..BootRecord::new(slot, &disk.node)
    };
    record
        .store(Path::new(paths::BOOT_RECORD))
        .with_context(|| format!("writing {}", paths::BOOT_RECORD))
        .step("writing /run/keel/boot.json", None)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_error_names_step_and_device() {
        let e = BootError {
            step: "mounting ROOT",
            device: Some("/dev/vda7".into()),
            source: anyhow!("EINVAL").context("mounting /dev/vda7 (ext4) on /sysroot"),
        };
        assert_eq!(
            e.to_string(),
            "mounting ROOT: /dev/vda7: mounting /dev/vda7 (ext4) on /sysroot: EINVAL"
        );
    }
}
