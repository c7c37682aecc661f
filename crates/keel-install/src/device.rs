//! The target: what it is and what is on it ([`DeviceFacts`], gathered by
//! a [`Host`]: `/proc/self/mountinfo`, `/proc/swaps`, `/sys/dev/block`,
//! the first MiB and the GPT), and the pure decision whether writing it is
//! safe ([`check`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Block device or regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A block device.
    Block,
    /// A regular file (a VM disk).
    File,
}

/// What the installer knows about the target before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// As given.
    pub path: PathBuf,
    /// Block device or file.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// It is a partition of a disk, not a whole disk.
    pub partition_of: Option<String>,
    /// Mounted filesystems on it or its partitions (`/dev/sdb1 on /mnt`).
    pub mounted: Vec<String>,
    /// Other users: device-mapper/md holders, swap.
    pub in_use: Vec<String>,
    /// A mount of the running system (`/`, `/usr`, `/boot`) lives on it.
    pub running_system: Option<String>,
    /// What is on it, for the question before writing.
    pub contents: String,
}

/// Why the target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The running system is on it.
    #[error("{dev} holds the running system ({what} is on it); refusing to overwrite it")]
    RunningSystem {
        /// The device.
        dev: String,
        /// Which mount.
        what: String,
    },
    /// A partition instead of a disk.
    #[error("{dev} is a partition of {disk}; keel-install writes a whole disk (give {disk})")]
    Partition {
        /// The device.
        dev: String,
        /// Its disk.
        disk: String,
    },
    /// Something on it is mounted.
    #[error("{dev} is mounted: {list}; unmount it first")]
    Mounted {
        /// The device.
        dev: String,
        /// What is mounted where.
        list: String,
    },
    /// Something else uses it.
    #[error("{dev} is in use: {list}")]
    InUse {
        /// The device.
        dev: String,
        /// By what.
        list: String,
    },
    /// Smaller than the image.
    #[error("{dev} is {size} bytes ({}), smaller than the image's {need} bytes ({})", human(*.size), human(*.need))]
    TooSmall {
        /// The device.
        dev: String,
        /// Its size.
        size: u64,
        /// The image's size.
        need: u64,
    },
}

/// Decide whether `f` may receive an image of `image_size` bytes.
pub fn check(f: &DeviceFacts, image_size: u64) -> Result<(), Refusal> {
    let dev = f.path.display().to_string();
    if let Some(what) = &f.running_system {
        return Err(Refusal::RunningSystem {
            dev,
            what: what.clone(),
        });
    }
    if let Some(disk) = &f.partition_of {
        return Err(Refusal::Partition {
            dev,
            disk: disk.clone(),
        });
    }
    if !f.mounted.is_empty() {
        return Err(Refusal::Mounted {
            dev,
            list: f.mounted.join(", "),
        });
    }
    if !f.in_use.is_empty() {
        return Err(Refusal::InUse {
            dev,
            list: f.in_use.join(", "),
        });
    }
    if f.size < image_size {
        return Err(Refusal::TooSmall {
            dev,
            size: f.size,
            need: image_size,
        });
    }
    Ok(())
}

/// Bytes for people: `2.9 GiB`, `512 MiB`, `100 KiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else if v >= 100.0 || v.fract() < 0.05 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Gathers [`DeviceFacts`]; the real one reads the running system, tests
/// use a fake.
pub trait Host {
    /// Look at the target.
    fn inspect(&self, dev: &Path) -> io::Result<DeviceFacts>;
}

/// The running Linux system.
#[derive(Debug, Clone)]
pub struct Real {
    /// `/proc` (tests point it elsewhere).
    pub proc_dir: PathBuf,
    /// `/sys`.
    pub sys_dir: PathBuf,
}

impl Default for Real {
    fn default() -> Self {
        Real {
            proc_dir: "/proc".into(),
            sys_dir: "/sys".into(),
        }
    }
}

/// One line of mountinfo: device number, mount point, source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor`.
    pub dev: String,
    /// Where.
    pub point: String,
    /// The mount source (`/dev/sda1`).
    pub source: String,
}

/// Parse `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(Mount {
                dev: f.get(2)?.to_string(),
                point: unescape(f.get(4)?),
                source: f.get(sep + 2).map(|s| unescape(s)).unwrap_or_default(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn majmin(rdev: u64) -> String {
    format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

impl Real {
    fn sysfs(&self, mm: &str) -> Option<PathBuf> {
        std::fs::canonicalize(self.sys_dir.join("dev/block").join(mm)).ok()
    }

    /// The whole disks under a block device (through partitions and
    /// device-mapper/md slaves).
    fn disks_under(&self, dir: &Path, out: &mut BTreeSet<String>, depth: u32) {
        if depth > 8 {
            return;
        }
        if dir.join("partition").exists() {
            if let Some(parent) = dir.parent() {
                if let Some(mm) = read_trim(&parent.join("dev")) {
                    out.insert(mm);
                }
            }
            return;
        }
        let slaves: Vec<PathBuf> = std::fs::read_dir(dir.join("slaves"))
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        if slaves.is_empty() {
            if let Some(mm) = read_trim(&dir.join("dev")) {
                out.insert(mm);
            }
            return;
        }
        for s in slaves {
            if let Ok(c) = std::fs::canonicalize(&s) {
                self.disks_under(&c, out, depth + 1);
            }
        }
    }
}

impl Host for Real {
    fn inspect(&self, dev: &Path) -> io::Result<DeviceFacts> {
        let meta = std::fs::metadata(dev)?;
        let ft = meta.file_type();
        let kind = if ft.is_block_device() {
            Kind::Block
        } else if ft.is_file() {
            Kind::File
        } else {
            return Err(io::Error::other(
                "neither a block device nor a regular file",
            ));
        };
        let file = File::open(dev)?;
        let size = keel_gpt::BlockDevice::size(&file)?;
        let mut facts = DeviceFacts {
            path: dev.to_path_buf(),
            kind,
            size,
            partition_of: None,
            mounted: vec![],
            in_use: vec![],
            running_system: None,
            contents: describe(&file, size, 512),
        };
        if kind == Kind::File {
            return Ok(facts);
        }
        let mm = majmin(meta.rdev());
        let Some(dir) = self.sysfs(&mm) else {
            return Ok(facts);
        };
        if dir.join("partition").exists() {
            facts.partition_of = dir
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| format!("/dev/{}", n.to_string_lossy()));
            return Ok(facts);
        }
        let ss = read_trim(&dir.join("queue/logical_block_size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(512);
        if ss != 512 {
            facts.contents = describe(&file, size, ss);
        }
        // The disk and its partitions, by device number and name.
        let mut mine: Vec<(String, String, PathBuf)> = vec![(
            mm.clone(),
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir.clone(),
        )];
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.filter_map(|e| e.ok()) {
                let p = e.path();
                if p.join("partition").exists() {
                    if let Some(pmm) = read_trim(&p.join("dev")) {
                        mine.push((pmm, e.file_name().to_string_lossy().into_owned(), p));
                    }
                }
            }
        }
        let mountinfo =
            std::fs::read_to_string(self.proc_dir.join("self/mountinfo")).unwrap_or_default();
        let mounts = parse_mountinfo(&mountinfo);
        for m in &mounts {
            if let Some((_, name, _)) = mine.iter().find(|(d, _, _)| *d == m.dev) {
                facts.mounted.push(format!("/dev/{name} on {}", m.point));
            }
        }
        for (_, name, p) in &mine {
            if let Ok(rd) = std::fs::read_dir(p.join("holders")) {
                for h in rd.filter_map(|e| e.ok()) {
                    let hn = h.file_name().to_string_lossy().into_owned();
                    let dm = read_trim(&h.path().join("dm/name"));
                    facts.in_use.push(match dm {
                        Some(d) => format!("/dev/{name} is held by {hn} ({d})"),
                        None => format!("/dev/{name} is held by {hn}"),
                    });
                }
            }
        }
        let swaps = std::fs::read_to_string(self.proc_dir.join("swaps")).unwrap_or_default();
        for l in swaps.lines().skip(1) {
            let Some(p) = l.split_whitespace().next() else {
                continue;
            };
            if let Ok(m) = std::fs::metadata(p) {
                if m.file_type().is_block_device()
                    && mine.iter().any(|(d, _, _)| *d == majmin(m.rdev()))
                {
                    facts.in_use.push(format!("{p} is swap"));
                }
            }
        }
        for point in ["/", "/usr", "/boot", "/boot/efi", "/efi", "/sysroot"] {
            for m in mounts.iter().filter(|m| m.point == point) {
                let Some(d) = self.sysfs(&m.dev) else {
                    continue;
                };
                let mut disks = BTreeSet::new();
                self.disks_under(&d, &mut disks, 0);
                if disks.contains(&mm) && facts.running_system.is_none() {
                    facts.running_system = Some(point.to_string());
                }
            }
        }
        Ok(facts)
    }
}

/// Read an ext4 label at `offset` (the start of a filesystem), if it is ext4.
fn ext4_label(dev: &impl FileExt, offset: u64) -> Option<String> {
    let mut sb = [0u8; 256];
    dev.read_exact_at(&mut sb, offset + 1024).ok()?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return None;
    }
    let raw = &sb[0x78..0x88];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// A line (or a few) saying what is on a device: partition table,
/// partition names and ext4 labels, size.
pub fn describe(file: &File, size: u64, sector: u64) -> String {
    let mut out = format!("{} ({size} bytes)", human(size));
    let mut head = vec![0u8; 4096.min(usize::try_from(size).unwrap_or(4096))];
    if file.read_exact_at(&mut head, 0).is_err() {
        out.push_str(", unreadable");
        return out;
    }
    match keel_gpt::Gpt::read(file, sector) {
        Ok((g, _)) => {
            out.push_str(&format!(
                ", GPT (disk {}), {} partition{}:",
                g.disk_guid,
                g.partitions.len(),
                if g.partitions.len() == 1 { "" } else { "s" }
            ));
            for p in &g.partitions {
                let bytes = p.sectors() * sector;
                let name = if p.name.is_empty() { "-" } else { &p.name };
                out.push_str(&format!("\n  {} {name} {}", p.number, human(bytes)));
                if let Some(l) = ext4_label(file, p.first_lba * sector) {
                    out.push_str(&format!(" ext4 label {l:?}"));
                }
            }
            return out;
        }
        Err(_) if head.len() >= 512 && head[510..512] == [0x55, 0xaa] => {
            let n = (0..4).filter(|i| head[446 + i * 16 + 4] != 0).count();
            out.push_str(&format!(", MBR partition table, {n} partition(s)"));
            return out;
        }
        Err(_) => {}
    }
    if let Some(l) = ext4_label(file, 0) {
        out.push_str(&format!(
            ", ext4 filesystem on the whole device, label {l:?}"
        ));
    } else if head.iter().all(|b| *b == 0) {
        out.push_str(", no partition table (starts with zeros)");
    } else {
        out.push_str(", no partition table, unknown data");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> DeviceFacts {
        DeviceFacts {
            path: "/dev/sdb".into(),
            kind: Kind::Block,
            size: 8 << 30,
            partition_of: None,
            mounted: vec![],
            in_use: vec![],
            running_system: None,
            contents: String::new(),
        }
    }

    #[test]
    fn a_free_large_disk_is_accepted() {
        assert_eq!(check(&facts(), 3 << 30), Ok(()));
        assert_eq!(check(&facts(), 8 << 30), Ok(()));
    }

    #[test]
    fn each_refusal_names_the_device_and_why() {
        let mut f = facts();
        f.running_system = Some("/usr".into());
        f.mounted = vec!["/dev/sdb1 on /".into()];
        let e = check(&f, 1).unwrap_err().to_string();
        assert!(e.contains("/dev/sdb holds the running system (/usr"), "{e}");

        let mut f = facts();
        f.partition_of = Some("/dev/sdb".into());
        let e = check(&f, 1).unwrap_err().to_string();
        assert!(e.contains("partition of /dev/sdb"), "{e}");

        let mut f = facts();
        f.mounted = vec!["/dev/sdb1 on /mnt".into(), "/dev/sdb2 on /srv".into()];
        let e = check(&f, 1).unwrap_err().to_string();
        assert!(
            e.contains("/dev/sdb is mounted: /dev/sdb1 on /mnt, /dev/sdb2 on /srv"),
            "{e}"
        );

        let mut f = facts();
        f.in_use = vec!["/dev/sdb2 is swap".into()];
        assert!(check(&f, 1)
            .unwrap_err()
            .to_string()
            .contains("in use: /dev/sdb2 is swap"));

        let e = check(&facts(), (8 << 30) + 1).unwrap_err().to_string();
        assert!(e.contains("smaller than the image"), "{e}");
        assert!(e.contains("(8 GiB)"), "{e}");
    }

    #[test]
    fn mountinfo_lines() {
        let t = "22 1 8:3 / / rw,relatime shared:1 - ext4 /dev/sda3 rw\n\
                 30 22 8:17 / /mnt/my\\040disk rw - vfat /dev/sdb1 rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, "8:3");
        assert_eq!(m[1].point, "/mnt/my disk");
        assert_eq!(m[1].source, "/dev/sdb1");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(128 << 20), "128 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }

    #[test]
    fn describes_gpt_names_and_blank_files() {
        use keel_gpt::{types, Gpt, Partition, Uuid};
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("d");
        let size = 8u64 << 20;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .expect("file");
        f.set_len(size).expect("len");
        assert!(describe(&f, size, 512).contains("no partition table (starts with zeros)"));
        let mut g = Gpt::new(size, 512).expect("gpt");
        g.set_partition(Partition {
            number: 1,
            type_guid: types::LINUX_DATA,
            unique_guid: Uuid::new_v4(),
            first_lba: 2048,
            last_lba: 2048 + 4095,
            attributes: 0,
            name: "OEM".into(),
        })
        .expect("part");
        g.write(&mut f).expect("write gpt");
        g.write_protective_mbr(&mut f).expect("mbr");
        let d = describe(&f, size, 512);
        assert!(d.contains("GPT") && d.contains("1 partition:"), "{d}");
        assert!(d.contains("1 OEM 2 MiB"), "{d}");
    }
}
