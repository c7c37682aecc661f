//! Where a first-boot config comes from, in order (the first that has one
//! wins): QEMU fw_cfg, a config drive, the kernel command line, the OEM
//! partition's `user-data` (placed by keel-install). Plus the OEM
//! partition's base config, which is merged underneath.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use keel_contract::{paths, Cmdline, CmdlineError};

use crate::sys::System;

/// fw_cfg keys, read as `<fw_cfg_root>/<key>/raw`: Keel's own first, then
/// the names Flatcar and CoreOS users already pass to QEMU.
pub const FW_CFG_KEYS: &[&str] = &[
    "opt/keel/config",
    "opt/org.flatcar-linux/config",
    "opt/com.coreos/config",
];

/// A source that exists but cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SourceError {
    /// Source, e.g. `fw_cfg opt/keel/config`.
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

/// A config found in a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Human-readable source, the prefix of every message about it.
    pub name: String,
    /// The user data (Ignition or cloud-config).
    pub data: Vec<u8>,
    /// NoCloud `meta-data` text, for `local-hostname`.
    pub meta_data: Option<Vec<u8>>,
}

/// Read the first fw_cfg key present.
pub fn fw_cfg(root: &Path) -> Result<Option<Found>, SourceError> {
    for key in FW_CFG_KEYS {
        let path = root.join(key).join("raw");
        match fs::read(&path) {
            Ok(data) => {
                return Ok(Some(Found {
                    name: format!("fw_cfg {key}"),
                    data,
                    meta_data: None,
                }));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(SourceError {
                    source_name: format!("fw_cfg {key}"),
                    message: format!("reading {}: {err}", path.display()),
                })
            }
        }
    }
    Ok(None)
}

/// File system and label of a config drive, read from the device itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `iso9660` or `vfat`.
    pub fstype: &'static str,
    /// Volume label, trailing spaces removed.
    pub label: String,
}

/// How many bytes [`probe`] needs: the ISO9660 primary volume descriptor
/// sits in sector 16 (offset 32768).
pub const PROBE_LEN: usize = 32768 + 2048;

/// Tell ISO9660 and FAT apart and read their label. The label is parsed
/// here rather than through libblkid: the initramfs has no C libraries and
/// only these two on-disk formats matter.
pub fn probe(buf: &[u8]) -> Option<Probe> {
    // ISO9660: descriptor type 1, "CD001", version 1; volume id at 40..72.
    if let Some(pvd) = buf.get(32768..32768 + 2048) {
        if pvd[0] == 1 && &pvd[1..6] == b"CD001" && pvd[6] == 1 {
            let label = String::from_utf8_lossy(&pvd[40..72])
                .trim_end_matches([' ', '\0'])
                .to_string();
            return Some(Probe {
                fstype: "iso9660",
                label,
            });
        }
    }
    // FAT: boot signature 55 AA; extended BPB signature 0x28/0x29 at 38
    // (FAT12/16, label at 43) or at 66 (FAT32, label at 71).
    let bs = buf.get(..512)?;
    if bs[510] != 0x55 || bs[511] != 0xAA {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes([bs[11], bs[12]]);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return None;
    }
    let fat16_sectors = u16::from_le_bytes([bs[22], bs[23]]);
    let (sig, label_at, type_at) = if fat16_sectors == 0 {
        (66, 71, 82)
    } else {
        (38, 43, 54)
    };
    if !matches!(bs[sig], 0x28 | 0x29) || !bs[type_at..type_at + 3].eq(b"FAT") {
        return None;
    }
    let label = String::from_utf8_lossy(&bs[label_at..label_at + 11])
        .trim_end_matches([' ', '\0'])
        .to_string();
    Some(Probe {
        fstype: "vfat",
        label,
    })
}

/// Find a config drive among the block devices listed in `block_dir`
/// (`/sys/class/block`), reading each `<dev_dir>/<name>`'s label; mount the
/// first labelled `config-2` or `cidata` (any case) read-only under
/// `mount_dir`, read its user data, unmount.
pub fn config_drive(
    block_dir: &Path,
    dev_dir: &Path,
    mount_dir: &Path,
    sys: &dyn System,
) -> Result<Option<Found>, SourceError> {
    let Ok(rd) = fs::read_dir(block_dir) else {
        return Ok(None);
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    for name in names {
        let dev = dev_dir.join(&name);
        let Some(p) = read_probe(&dev) else { continue };
        let label = p.label.to_ascii_lowercase();
        let files: &[&str] = match label.as_str() {
            "config-2" => &["openstack/latest/user_data"],
            "cidata" => &["user-data", "meta-data"],
            _ => continue,
        };
        let source_name = format!("config drive {} ({label})", dev.display());
        let fail = |message: String| SourceError {
            source_name: source_name.clone(),
            message,
        };
        fs::create_dir_all(mount_dir)
            .map_err(|err| fail(format!("creating {}: {err}", mount_dir.display())))?;
        sys.mount_ro(&dev, p.fstype, mount_dir).map_err(|err| {
            fail(format!(
                "mounting {} ({}) on {}: {err}",
                dev.display(),
                p.fstype,
                mount_dir.display()
            ))
        })?;
        let read = |rel: &str| -> Result<Option<Vec<u8>>, String> {
            let path = mount_dir.join(rel);
            match fs::read(&path) {
                Ok(d) => Ok(Some(d)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(format!("reading {rel}: {err}")),
            }
        };
        let user = read(files[0]);
        let meta = files.get(1).map(|f| read(f)).transpose();
        let unmounted = sys.umount(mount_dir);
        let _ = fs::remove_dir(mount_dir);
        let user = user.map_err(fail)?;
        let meta = meta.map_err(fail)?.flatten();
        unmounted.map_err(|err| fail(format!("unmounting {}: {err}", mount_dir.display())))?;
        if user.is_none() && meta.is_none() {
            tracing::info!(drive = %dev.display(), "config drive has no user data");
            return Ok(None);
        }
        let name = match label.as_str() {
            "cidata" => format!("{source_name} user-data"),
            _ => format!("{source_name} {}", files[0]),
        };
        return Ok(Some(Found {
            name,
            data: user.unwrap_or_default(),
            meta_data: meta,
        }));
    }
    Ok(None)
}

fn read_probe(dev: &Path) -> Option<Probe> {
    let f = fs::File::open(dev).ok()?;
    let mut buf = Vec::with_capacity(PROBE_LEN);
    f.take(PROBE_LEN as u64).read_to_end(&mut buf).ok()?;
    probe(&buf)
}

/// Whether `keel.first_boot` forces provisioning to run again although the
/// marker exists: read by the shared parser, so provisioning and keel-init
/// agree (a bare `keel.first_boot` is true for both).
pub fn forced(cmdline: &str) -> Result<bool, CmdlineError> {
    Cmdline::parse(cmdline).first_boot()
}

/// A config in a `data:` URL on the kernel command line.
/// The parameters are `keel.config_url` and Ignition's `ignition.config.url`
/// ([`keel_contract::cmdline::CONFIG_URL`]).
pub fn cmdline(cmdline: &str) -> Result<Option<Found>, SourceError> {
    let line = Cmdline::parse(cmdline);
    if let Some((key, url)) = line.config_url() {
        let source_name = format!("kernel command line {key}");
        if !url
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("data:"))
        {
            return Err(SourceError {
                source_name,
                message: "only data: URLs are supported (the initramfs has no network)".into(),
            });
        }
        let data = crate::dataurl::decode(url).map_err(|e| SourceError {
            source_name: source_name.clone(),
            message: e.to_string(),
        })?;
        return Ok(Some(Found {
            name: source_name,
            data,
            meta_data: None,
        }));
    }
    Ok(None)
}

/// The user config on the OEM partition, `<oem_dir>/user-data`
/// ([`paths::OEM_USER_DATA`]), if present: what `keel-install
/// --cloud-config` places on a new disk. Any format [`crate::parse_config`]
/// reads; an empty file is "no config", as for a config drive.
pub fn oem_user_data(oem_dir: &Path) -> Result<Option<Found>, SourceError> {
    let path = oem_dir.join(paths::on_oem(paths::OEM_USER_DATA));
    let name = format!("OEM user-data {}", path.display());
    match fs::read(&path) {
        Ok(data) => Ok(Some(Found {
            name,
            data,
            meta_data: None,
        })),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(SourceError {
            source_name: name,
            message: format!("reading it: {err}"),
        }),
    }
}

/// The OEM base config, `<oem_dir>/config.ign`, if present.
pub fn oem_base(oem_dir: &Path) -> Result<Option<(PathBuf, Vec<u8>)>, SourceError> {
    let path = oem_dir.join(paths::on_oem(paths::OEM_BASE_CONFIG));
    match fs::read(&path) {
        Ok(d) => Ok(Some((path, d))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(SourceError {
            source_name: format!("OEM base config {}", path.display()),
            message: err.to_string(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn iso_header(label: &str) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_LEN];
        b[32768] = 1;
        b[32769..32774].copy_from_slice(b"CD001");
        b[32774] = 1;
        let mut l = [b' '; 32];
        l[..label.len()].copy_from_slice(label.as_bytes());
        b[32768 + 40..32768 + 72].copy_from_slice(&l);
        b
    }

    pub(crate) fn fat_header(label: &str, fat32: bool) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        let (sig, lab, ty) = if fat32 { (66, 71, 82) } else { (38, 43, 54) };
        if !fat32 {
            b[22] = 1;
        }
        b[sig] = 0x29;
        let mut l = [b' '; 11];
        l[..label.len()].copy_from_slice(label.as_bytes());
        b[lab..lab + 11].copy_from_slice(&l);
        b[ty..ty + 8].copy_from_slice(if fat32 { b"FAT32   " } else { b"FAT16   " });
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn probes_iso_and_fat() {
        assert_eq!(
            probe(&iso_header("cidata")),
            Some(Probe {
                fstype: "iso9660",
                label: "cidata".into()
            })
        );
        assert_eq!(
            probe(&fat_header("CIDATA", false)),
            Some(Probe {
                fstype: "vfat",
                label: "CIDATA".into()
            })
        );
        assert_eq!(
            probe(&fat_header("CONFIG-2", true)),
            Some(Probe {
                fstype: "vfat",
                label: "CONFIG-2".into()
            })
        );
        assert_eq!(probe(&[0u8; 100]), None);
        assert_eq!(probe(&vec![0u8; PROBE_LEN]), None);
        let mut bad = fat_header("X", false);
        bad[38] = 0;
        assert_eq!(probe(&bad), None);
    }

    #[test]
    fn command_line() {
        let c =
            "root=/dev/vda7 quiet \"keel.config_url=data:,%23cloud-config%0A\" keel.first_boot=1";
        assert!(forced(c).unwrap());
        assert!(!forced("keel.first_boot=0").unwrap());
        assert!(!forced("keel.first_boot_x=1").unwrap());
        assert_eq!(
            forced("keel.first_boot=maybe").unwrap_err().to_string(),
            "kernel command line: keel.first_boot=\"maybe\" is not 0 or 1"
        );
        let f = cmdline(c).unwrap().unwrap();
        assert_eq!(f.name, "kernel command line keel.config_url");
        assert_eq!(f.data, b"#cloud-config\n");
        assert_eq!(cmdline("quiet").unwrap(), None);
        assert_eq!(
            cmdline("ignition.config.url=https://x/y").unwrap_err().to_string(),
            "kernel command line ignition.config.url: only data: URLs are supported (the initramfs has no network)"
        );
        assert_eq!(
            cmdline("keel.config_url=data:;base64,a*")
                .unwrap_err()
                .to_string(),
            "kernel command line keel.config_url: invalid base64 at offset 14: invalid byte '*'"
        );
    }

    /// keel-init reads a bare `keel.first_boot` as true (it redoes growth
    /// and identity); provisioning must agree, or it says "already
    /// provisioned" on the boot that was meant to redo it.
    #[test]
    fn bare_first_boot_forces_as_for_keel_init() {
        assert_eq!(forced("quiet keel.first_boot"), Ok(true));
        assert_eq!(forced("keel.first_boot= quiet"), Ok(true));
    }

    proptest! {
        #[test]
        fn probe_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024), fat32 in any::<bool>(), at in 0usize..512, v in any::<u8>()) {
            let _ = probe(&data);
            let mut f = fat_header("CIDATA", fat32);
            f[at] = v;
            let _ = probe(&f);
        }

        #[test]
        fn cmdline_never_panics(s in "[ -~]{0,200}") {
            let _ = cmdline(&s);
            let _ = forced(&s);
        }
    }
}
