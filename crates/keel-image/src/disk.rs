//! Assembling the GPT disk image from partition images, without loop devices:
//! the partition contents are copied into a sparse file at their offsets and
//! the table is written by [`keel_gpt`].

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use keel_gpt::prio::Prio;
use keel_gpt::{Gpt, Partition, Uuid};

/// DPS attribute bit 59: grow the file system to the partition at boot.
pub const GROW_FS: u64 = 1 << 59;
/// DPS attribute bit 60: mount read-only.
pub const READ_ONLY: u64 = 1 << 60;

/// Attributes of a USR slot: gptprio bits plus read-only.
pub fn usr_attrs(priority: u8, tries: u8, successful: bool) -> u64 {
    let p = Prio {
        priority,
        tries,
        successful,
    };
    // Priority and tries come from this module's constants, all ≤ 15.
    p.apply(READ_ONLY).unwrap_or(READ_ONLY)
}

/// One partition to lay out.
#[derive(Debug, Clone)]
pub struct PartSpec {
    /// GPT name.
    pub label: String,
    /// Type GUID.
    pub type_guid: Uuid,
    /// Size in MiB.
    pub mib: u64,
    /// Contents, if any.
    pub image: Option<PathBuf>,
    /// Attribute bits.
    pub attributes: u64,
}

impl PartSpec {
    /// A partition without attributes.
    pub fn new(label: &str, type_guid: Uuid, mib: u64, image: Option<PathBuf>) -> Self {
        PartSpec {
            label: label.into(),
            type_guid,
            mib,
            image,
            attributes: 0,
        }
    }
    /// With attribute bits.
    pub fn attrs(mut self, a: u64) -> Self {
        self.attributes = a;
        self
    }
}

const MIB: u64 = 1 << 20;

/// Lay the partitions out 1 MiB-aligned, in order, numbered from 1, copy their
/// contents (sparsely) and write a protective MBR and both GPT headers.
pub fn assemble(path: &Path, sector_size: u64, parts: &[PartSpec]) -> Result<Gpt> {
    let total = MIB + parts.iter().map(|p| p.mib * MIB).sum::<u64>() + MIB;
    let tmp = path.with_extension("img.part");
    let _ = fs::remove_file(&tmp);
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.set_len(total)?;
    let mut gpt = Gpt::new(total, sector_size)?;
    let mut offset = MIB;
    for (i, p) in parts.iter().enumerate() {
        let size = p.mib * MIB;
        if let Some(img) = &p.image {
            let len = fs::metadata(img)
                .with_context(|| format!("reading {}", img.display()))?
                .len();
            ensure!(
                len <= size,
                "{} ({} bytes) does not fit partition {} of {} MiB",
                img.display(),
                len,
                p.label,
                p.mib
            );
            copy_sparse(img, &f, offset)
                .with_context(|| format!("copying {} into {}", img.display(), p.label))?;
        }
        gpt.set_partition(Partition {
            number: i as u32 + 1,
            type_guid: p.type_guid,
            unique_guid: Uuid::new_v4(),
            first_lba: offset / sector_size,
            last_lba: (offset + size) / sector_size - 1,
            attributes: p.attributes,
            name: p.label.clone(),
        })?;
        offset += size;
    }
    gpt.write_protective_mbr(&mut f)?;
    gpt.write(&mut f)?;
    drop(f);
    fs::rename(&tmp, path)?;
    Ok(gpt)
}

/// Copy `src` into `dst` at `offset`, skipping all-zero blocks so the image
/// stays sparse.
fn copy_sparse(src: &Path, dst: &File, offset: u64) -> Result<()> {
    let mut s = File::open(src)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let r = s.read(&mut buf[n..])?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        for (k, chunk) in buf[..n].chunks(4096).enumerate() {
            if chunk.iter().any(|b| *b != 0) {
                dst.write_all_at(chunk, offset + pos + (k * 4096) as u64)?;
            }
        }
        pos += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_gpt::types;

    #[test]
    fn assembles_a_readable_table() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("a.bin");
        let mut data = vec![0u8; 3 * 4096];
        data[4096] = 7;
        fs::write(&content, &data).unwrap();
        let disk = dir.path().join("d.img");
        assemble(
            &disk,
            512,
            &[
                PartSpec::new("USR-A", types::USR_X86_64, 2, Some(content))
                    .attrs(usr_attrs(1, 0, true)),
                PartSpec::new("ROOT", types::ROOT_X86_64, 1, None).attrs(GROW_FS),
            ],
        )
        .unwrap();
        let f = File::open(&disk).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 5 * MIB);
        let (g, _) = Gpt::read(&f, 512).unwrap();
        let a = g.by_name("USR-A").unwrap();
        assert_eq!(a.first_lba, 2048);
        assert_eq!(a.number, 1);
        let prio = Prio::from_attributes(a.attributes);
        assert_eq!((prio.priority, prio.tries, prio.successful), (1, 0, true));
        assert_ne!(a.attributes & READ_ONLY, 0);
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, MIB + 4096).unwrap();
        assert_eq!(b[0], 7);
        assert_eq!(g.by_name("ROOT").unwrap().first_lba, 3 * 2048);
    }

    #[test]
    fn too_large_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("big.bin");
        fs::File::create(&content)
            .unwrap()
            .set_len(2 * MIB)
            .unwrap();
        let err = assemble(
            &dir.path().join("d.img"),
            512,
            &[PartSpec::new("OEM", types::LINUX_DATA, 1, Some(content))],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not fit partition OEM of 1 MiB"), "{err}");
    }
}
