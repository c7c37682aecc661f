//! Putting the first-boot config onto the new disk: the OEM partition's
//! `config.ign` (Ignition) or `user-data` (a cloud-config; see
//! [`crate::config`] for why there). The partition is
//! found in the image's own GPT (read from the held-back first MiB and the
//! device), and written through a loop device over exactly that range, so
//! it works the same for a disk, a loop device and a disk image file, and
//! needs no partition nodes from the kernel.

use std::io;
use std::path::{Path, PathBuf};

use keel_gpt::{BlockDevice, Gpt};

/// DPS "grow file system" attribute (bit 59): keel-init grows ROOT only with it.
pub const GROW_FS: u64 = 1 << 59;

/// Where OEM is and whether ROOT will grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// OEM's first byte.
    pub oem_offset: u64,
    /// OEM's size in bytes.
    pub oem_size: u64,
    /// ROOT is the last partition and carries the grow-fs attribute.
    pub root_grows: bool,
}

/// The image's first MiB in front of the device (the table is not on the
/// device yet when the config is placed).
#[derive(Debug)]
pub struct HeadOver<'a, D> {
    /// The held-back bytes.
    pub head: &'a [u8],
    /// The device.
    pub dev: &'a D,
    /// The image's size (the backup GPT is at its end, not the device's).
    pub size: u64,
}

impl<D: BlockDevice> BlockDevice for HeadOver<'_, D> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let hl = self.head.len() as u64;
        let mut from = 0usize;
        if offset < hl {
            let k = ((hl - offset) as usize).min(buf.len());
            buf[..k].copy_from_slice(&self.head[offset as usize..offset as usize + k]);
            from = k;
        }
        if from < buf.len() {
            self.dev
                .read_exact_at(&mut buf[from..], offset + from as u64)?;
        }
        Ok(())
    }
    fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("read-only view"))
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Find OEM (by its label) and ROOT's growth attribute in the image's GPT.
pub fn layout(dev: &impl BlockDevice) -> Result<Layout, String> {
    let (g, _) = Gpt::read(dev, 512).map_err(|e| format!("reading the image's GPT: {e}"))?;
    let oem = g
        .by_name("OEM")
        .ok_or("the image's GPT has no partition labelled OEM")?;
    let last = g.partitions.iter().max_by_key(|p| p.last_lba);
    let root_grows = matches!(last, Some(p) if p.name == "ROOT" && p.attributes & GROW_FS != 0);
    Ok(Layout {
        oem_offset: oem.first_lba * g.sector_size,
        oem_size: oem.sectors() * g.sector_size,
        root_grows,
    })
}

/// What goes onto OEM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The config and its file (`config.ign` or `user-data`), if one was given.
    pub config: Option<crate::config::Placed>,
    /// The platform the operator expects (`oem-release` `ID=`).
    pub platform: Option<String>,
}

/// Writes into the OEM partition of the target.
pub trait Placer {
    /// Carry out `req` on the OEM range of the target; returns a line for
    /// the operator.
    fn place(&mut self, l: &Layout, req: &Request) -> Result<String, String>;
}

/// `ID=` of an os-release-style text.
pub fn release_id(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("ID=")?;
        Some(v.trim_matches('"').to_string())
    })
}

/// The checks and the write on a mounted OEM tree (pure file operations,
/// shared by the real placer and the tests).
pub fn place_in(dir: &Path, req: &Request) -> Result<String, String> {
    let mut said = Vec::new();
    if let Some(want) = &req.platform {
        let path = dir.join("oem-release");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading the image's OEM oem-release: {e}"))?;
        let id = release_id(&text).unwrap_or_default();
        if &id != want {
            return Err(format!(
                "--platform {want}: this image's OEM tree is for {:?} (oem-release ID), not {want}",
                id
            ));
        }
        said.push(format!("OEM platform {id}"));
    }
    if let Some(c) = &req.config {
        let path = dir.join(c.file);
        if path.exists() {
            let what = if c.file == crate::config::OEM_CONFIG {
                "a base config"
            } else {
                "a user config"
            };
            return Err(format!(
                "the image's OEM tree already has {what} ({}); keel-install does not merge configs",
                c.file
            ));
        }
        // Root-only: a config may carry password hashes and keys.
        keel_contract::AtomicWrite::new()
            .mode(0o600)
            .write(&path, &c.data)
            .map_err(|e| format!("writing OEM {}: {e}", c.file))?;
        said.push(format!(
            "first-boot config in OEM {} ({} bytes)",
            c.file,
            c.data.len()
        ));
    }
    Ok(said.join(", "))
}

/// The real placer: a loop device over the OEM range of `device`, ext4
/// mounted on a private directory, [`place_in`], unmounted, detached.
#[derive(Debug)]
pub struct Real {
    /// The target.
    pub device: PathBuf,
}

impl Placer for Real {
    fn place(&mut self, l: &Layout, req: &Request) -> Result<String, String> {
        let lo = crate::sys::LoopDevice::attach(&self.device, l.oem_offset, l.oem_size)
            .map_err(|e| format!("a loop device over the new OEM partition: {e}"))?;
        let dir = std::env::temp_dir().join(format!("keel-install-oem.{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mounted = rustix::mount::mount(
            lo.path(),
            &dir,
            "ext4",
            rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV
                | rustix::mount::MountFlags::NOEXEC,
            None::<&std::ffi::CStr>,
        );
        if let Err(e) = mounted {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mounting the new OEM partition (ext4, {}) on {}: {e}",
                lo.path().display(),
                dir.display()
            ));
        }
        let r = place_in(&dir, req);
        let um = rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::empty());
        let _ = std::fs::remove_dir(&dir);
        drop(lo);
        let said = r?;
        um.map_err(|e| format!("unmounting the new OEM partition: {e}"))?;
        Ok(said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_gpt::{types, Partition, Uuid};

    #[test]
    fn finds_oem_and_roots_growth_through_the_held_back_head() {
        let size = 8u64 << 20;
        let mut disk = vec![0u8; size as usize];
        let mut g = Gpt::new(size, 512).expect("gpt");
        for (n, name, ty, first, last, attr) in [
            (1, "EFI-SYSTEM", types::ESP, 2048u64, 4095u64, 0u64),
            (6, "OEM", types::LINUX_DATA, 4096, 6143, 0),
            (7, "ROOT", types::ROOT_X86_64, 6144, 16000, GROW_FS),
        ] {
            g.set_partition(Partition {
                number: n,
                type_guid: ty,
                unique_guid: Uuid::new_v4(),
                first_lba: first,
                last_lba: last,
                attributes: attr,
                name: name.into(),
            })
            .expect("part");
        }
        g.write(&mut disk).expect("write");
        // The head is held back: the device itself has zeros there (and
        // here no backup table either).
        let head = disk[..1 << 20].to_vec();
        disk[..1 << 20].fill(0);
        let n = disk.len();
        disk[n - (1 << 20)..].fill(0);
        assert!(layout(&disk).is_err());
        let over = HeadOver {
            head: &head,
            dev: &disk,
            size,
        };
        let l = layout(&over).expect("layout");
        assert_eq!(l.oem_offset, 4096 * 512);
        assert_eq!(l.oem_size, 2048 * 512);
        assert!(l.root_grows);
    }

    fn placed(file: &'static str, data: &[u8]) -> Option<crate::config::Placed> {
        Some(crate::config::Placed {
            file,
            data: data.to_vec(),
            summary: String::new(),
        })
    }

    #[test]
    fn placing_checks_platform_and_refuses_to_replace_a_base_config() {
        let t = tempfile::tempdir().expect("tmp");
        std::fs::write(
            t.path().join("oem-release"),
            "# x\nID=qemu\nNAME=\"QEMU\"\n",
        )
        .expect("w");
        let req = Request {
            config: placed(crate::config::OEM_CONFIG, b"{}"),
            platform: Some("qemu".into()),
        };
        let said = place_in(t.path(), &req).expect("place");
        assert!(
            said.contains("OEM platform qemu") && said.contains("config.ign"),
            "{said}"
        );
        let meta = std::fs::metadata(t.path().join("config.ign")).expect("placed");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let e = place_in(t.path(), &req).expect_err("second");
        assert!(e.contains("already has a base config"), "{e}");
        let e = place_in(
            t.path(),
            &Request {
                config: None,
                platform: Some("aws".into()),
            },
        )
        .expect_err("platform");
        assert!(e.contains("for \"qemu\""), "{e}");
    }

    /// A cloud-config goes to `user-data`, beside a vendor's base config
    /// (the first boot merges it over that), root-only; a second one is
    /// refused.
    #[test]
    fn a_cloud_config_is_placed_as_user_data_beside_a_base_config() {
        let t = tempfile::tempdir().expect("tmp");
        let base = br#"{"ignition":{"version":"3.4.0"}}"#;
        std::fs::write(t.path().join("config.ign"), base).expect("w");
        let text = b"#cloud-config\nhostname: a\n";
        let req = Request {
            config: placed(crate::config::OEM_USER_DATA, text),
            platform: None,
        };
        let said = place_in(t.path(), &req).expect("place");
        assert!(said.contains("OEM user-data (26 bytes)"), "{said}");
        let p = t.path().join("user-data");
        assert_eq!(std::fs::read(&p).expect("read"), text);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read(t.path().join("config.ign")).expect("base"),
            base
        );
        let e = place_in(t.path(), &req).expect_err("second");
        assert!(e.contains("already has a user config (user-data)"), "{e}");
    }
}
