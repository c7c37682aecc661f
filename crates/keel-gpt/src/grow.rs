//! First-boot growth of the last partition (ROOT) after the disk grew.
//!
//! A Keel image is written to (or cloned onto) a disk larger than the image:
//! the backup GPT then sits in the middle of the disk and ROOT ends where the
//! image ended. [`Gpt::grow_last_partition`] is the pure part: move the end
//! of the usable area to the end of the disk (so the backup goes to the last
//! sector on the next write) and extend the last partition to it.
//! [`grow_disk`] is the disk-level step keel-init runs: read, refuse damaged
//! or unexpected tables without writing, plan, and write both tables with
//! correct CRCs only when something changes.
//!
//! Every step is re-detectable from the disk, so a power cut at any point
//! leaves a disk the next run completes: the backup is written before the
//! primary, a cut before the primary header leaves the old primary (and its
//! old, intact backup) or the torn state [`ReadReport::primary_torn`]
//! recognises, and growing a grown table changes nothing.

use thiserror::Error;
use uuid::Uuid;

use crate::table::{BlockDevice, Gpt, GptError, Partition, ReadReport, Which};

/// Why the table was not grown. Nothing was written when one of these is
/// returned.
#[derive(Debug, Error)]
pub enum GrowError {
    /// Reading or writing the table failed, or it is invalid.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// No partition with that label.
    #[error("no partition labelled {0} in the GPT")]
    NoPartition(String),
    /// The partition to grow is not the last one on the disk.
    #[error(
        "partition {number} ({name}) is not the last partition: partition {after} ({after_name}) \
         starts at LBA {after_first}, after it; only the last partition can grow"
    )]
    NotLast {
        number: u32,
        name: String,
        after: u32,
        after_name: String,
        after_first: u64,
    },
    /// The disk is smaller than the table says.
    #[error(
        "partition {number} ({name}) ends at LBA {last}, beyond the last usable LBA {usable_last} \
         of a disk of {disk_bytes} bytes: the disk shrank"
    )]
    Shrunk {
        number: u32,
        name: String,
        last: u64,
        usable_last: u64,
        disk_bytes: u64,
    },
    /// One copy of the table is damaged; the valid copy is used read-only.
    #[error(
        "the {which} GPT is damaged ({source}); using the {other} copy read-only and not \
         writing the disk (repair the table, e.g. with `sgdisk -e`, to let it grow)"
    )]
    Damaged {
        which: Which,
        other: Which,
        #[source]
        source: GptError,
    },
}

/// What growing changed, in sectors of the table's sector size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    /// The partition grown.
    pub number: u32,
    /// Its label.
    pub name: String,
    /// Its last LBA before.
    pub old_last_lba: u64,
    /// Its last LBA after.
    pub new_last_lba: u64,
    /// The last usable LBA before.
    pub old_last_usable: u64,
    /// The last usable LBA after.
    pub new_last_usable: u64,
    /// Sector size in bytes.
    pub sector_size: u64,
    /// Its first LBA (unchanged).
    pub first_lba: u64,
}

impl Growth {
    /// Partition size before, in bytes.
    pub fn old_bytes(&self) -> u64 {
        (self.old_last_lba - self.first_lba + 1) * self.sector_size
    }
    /// Partition size after, in bytes.
    pub fn new_bytes(&self) -> u64 {
        (self.new_last_lba - self.first_lba + 1) * self.sector_size
    }
}

impl Gpt {
    /// Fit the table to a disk of `disk_size` bytes and, if `number` is the
    /// last partition, extend it to the last usable LBA. Pure: only `self`
    /// changes, and only on success. Returns `None` when the partition
    /// already ends at the end of the usable area of this disk (growing a
    /// grown table is a no-op).
    pub fn grow_last_partition(
        &mut self,
        disk_size: u64,
        number: u32,
    ) -> Result<Option<Growth>, GrowError> {
        self.validate()?;
        let p = self
            .partitions
            .iter()
            .find(|p| p.number == number)
            .ok_or(GptError::NoSuchPartition(number))?
            .clone();
        if let Some(after) = self
            .partitions
            .iter()
            .filter(|q| q.number != number && q.first_lba > p.first_lba)
            .min_by_key(|q| q.first_lba)
        {
            return Err(GrowError::NotLast {
                number,
                name: p.name.clone(),
                after: after.number,
                after_name: after.name.clone(),
                after_first: after.first_lba,
            });
        }
        let mut next = self.clone();
        let old_last_usable = next.last_usable_lba;
        next.fit_to_disk(disk_size).map_err(|e| match e {
            GptError::TooSmall { .. } => GrowError::Shrunk {
                number,
                name: p.name.clone(),
                last: p.last_lba,
                usable_last: (disk_size / self.sector_size).saturating_sub(34),
                disk_bytes: disk_size,
            },
            e => e.into(),
        })?;
        let new_last_usable = next.last_usable_lba;
        if p.last_lba == new_last_usable && old_last_usable == new_last_usable {
            return Ok(None);
        }
        next.by_number_mut(number)?.last_lba = new_last_usable;
        next.validate()?;
        *self = next;
        Ok(Some(Growth {
            number,
            name: p.name,
            old_last_lba: p.last_lba,
            new_last_lba: new_last_usable,
            old_last_usable,
            new_last_usable,
            sector_size: self.sector_size,
            first_lba: p.first_lba,
        }))
    }
}

/// What [`grow_disk`] should do.
#[derive(Debug, Clone)]
pub struct GrowRequest<'a> {
    /// Label of the partition to grow (Keel: "ROOT").
    pub label: &'a str,
    /// Extend the partition (otherwise only the backup moves to the end).
    pub grow: bool,
    /// Give the disk this GUID (first boot: clones must differ).
    pub disk_guid: Option<Uuid>,
    /// Give the partition this unique GUID.
    pub partition_guid: Option<Uuid>,
}

/// What [`grow_disk`] found and did.
#[derive(Debug)]
pub struct GrowOutcome {
    /// How the table was read.
    pub report: ReadReport,
    /// The partition growth, if it grew.
    pub growth: Option<Growth>,
    /// The table as it is on disk now.
    pub gpt: Gpt,
    /// The partition (as on disk now).
    pub partition: Partition,
    /// The disk GUID before.
    pub old_disk_guid: Uuid,
    /// Both tables were written.
    pub wrote: bool,
    /// The protective MBR was rewritten to cover the disk.
    pub wrote_mbr: bool,
}

/// Read the table from `dev`, grow the partition labelled `req.label` to the
/// end of the disk, apply the requested GUIDs, and write both tables (backup
/// first) only if anything changed or the backup is not at the disk's end.
///
/// Refuses, without writing anything, when either copy of the table is
/// damaged (unless the damage is an interrupted write of ours, see
/// [`ReadReport::primary_torn`]), the partition is missing or not last, or
/// the disk shrank.
pub fn grow_disk(
    dev: &mut impl BlockDevice,
    sector_size: u64,
    req: &GrowRequest<'_>,
) -> Result<GrowOutcome, GrowError> {
    let (mut gpt, mut report) = Gpt::read(dev, sector_size)?;
    match report.primary_error.take() {
        Some(source) if !report.primary_torn => {
            return Err(GrowError::Damaged {
                which: Which::Primary,
                other: Which::Backup,
                source,
            })
        }
        other => report.primary_error = other,
    }
    if let Some(source) = report.backup_error.take() {
        return Err(GrowError::Damaged {
            which: Which::Backup,
            other: Which::Primary,
            source,
        });
    }
    let old_disk_guid = gpt.disk_guid;
    let number = gpt
        .by_name(req.label)
        .ok_or_else(|| GrowError::NoPartition(req.label.to_string()))?
        .number;
    let size = dev
        .size()
        .map_err(|source| GptError::Io {
            what: "reading device size",
            offset: 0,
            source,
        })
        .map_err(GrowError::from)?;
    let growth = if req.grow {
        gpt.grow_last_partition(size, number)?
    } else {
        // Still check the partition could grow (refuse odd tables the same
        // way), but only move the backup.
        gpt.clone().grow_last_partition(size, number)?;
        gpt.fit_to_disk(size)?;
        None
    };
    let mut changed = growth.is_some() || report.backup_misplaced || report.primary_torn;
    if let Some(g) = req.disk_guid {
        changed |= gpt.disk_guid != g;
        gpt.disk_guid = g;
    }
    if let Some(g) = req.partition_guid {
        let p = gpt.by_number_mut(number)?;
        changed |= p.unique_guid != g;
        p.unique_guid = g;
    }
    // The protective MBR first: it describes the disk, not the table, and
    // the table write's syncs then cover it (one flush less at boot).
    let wrote_mbr = fix_protective_mbr(dev, &gpt)?;
    if changed {
        gpt.write(dev)?;
    } else if wrote_mbr {
        dev.sync().map_err(|source| GptError::Io {
            what: "syncing",
            offset: 0,
            source,
        })?;
    }
    let partition = gpt
        .partitions
        .iter()
        .find(|p| p.number == number)
        .cloned()
        .ok_or(GptError::NoSuchPartition(number))?;
    Ok(GrowOutcome {
        report,
        growth,
        gpt,
        partition,
        old_disk_guid,
        wrote: changed,
        wrote_mbr,
    })
}

/// Rewrite a protective MBR whose size field no longer covers the disk.
/// Leaves anything that is not a plain protective MBR (a hybrid MBR, no
/// MBR) alone. Returns whether it wrote.
fn fix_protective_mbr(dev: &mut impl BlockDevice, gpt: &Gpt) -> Result<bool, GptError> {
    let mut mbr = [0u8; 512];
    dev.read_exact_at(&mut mbr, 0)
        .map_err(|source| GptError::Io {
            what: "reading MBR",
            offset: 0,
            source,
        })?;
    let protective = mbr[510..512] == [0x55, 0xAA]
        && mbr[446 + 4] == 0xEE
        && mbr[462..510].iter().all(|b| *b == 0);
    if !protective {
        return Ok(false);
    }
    let size = dev.size().map_err(|source| GptError::Io {
        what: "reading device size",
        offset: 0,
        source,
    })?;
    let want = u32::try_from(size / gpt.sector_size - 1).unwrap_or(u32::MAX);
    let have = u32::from_le_bytes([mbr[458], mbr[459], mbr[460], mbr[461]]);
    if have == want {
        return Ok(false);
    }
    gpt.write_protective_mbr(dev)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::fs::File;
    use std::io;

    use super::*;
    use crate::prio::Prio;
    use crate::types;

    const MIB: u64 = 1 << 20;
    const SS: u64 = 512;

    /// Keel's seven partitions, small, on a disk of `size` bytes; `skip`
    /// leaves out the partitions with these numbers.
    fn keel_table(size: u64, skip: &[u32]) -> Gpt {
        let mut g = Gpt::new(size, SS).unwrap();
        let parts: [(&str, Uuid, u64, u64, u64); 7] = [
            ("EFI-SYSTEM", types::ESP, 2048, 2559, 0),
            (
                "USR-A",
                types::USR_X86_64,
                2560,
                3071,
                1 << 48 | 1 << 56 | 1 << 60,
            ),
            (
                "USR-A-VERITY",
                types::USR_VERITY_X86_64,
                3072,
                3199,
                1 << 60,
            ),
            ("USR-B", types::USR_X86_64, 3200, 3711, 0),
            (
                "USR-B-VERITY",
                types::USR_VERITY_X86_64,
                3712,
                3839,
                1 << 60,
            ),
            ("OEM", types::LINUX_DATA, 3840, 4095, 1 << 60),
            ("ROOT", types::ROOT_X86_64, 4096, 7999, 1 << 59),
        ];
        for (i, (name, t, first, last, attributes)) in parts.into_iter().enumerate() {
            let number = i as u32 + 1;
            if skip.contains(&number) {
                continue;
            }
            g.set_partition(Partition {
                number,
                type_guid: t,
                unique_guid: Uuid::new_v4(),
                first_lba: first,
                last_lba: last,
                attributes,
                name: name.into(),
            })
            .unwrap();
        }
        g
    }

    /// An image file holding `g`, then enlarged to `grown` bytes the way
    /// `qemu-img resize` or a bigger cloud volume does.
    fn image_file(g: &Gpt, size: u64, grown: u64) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        g.write_protective_mbr(&mut f).unwrap();
        g.write(&mut f).unwrap();
        f.set_len(grown).unwrap();
        f
    }

    fn contents(f: &File) -> Vec<u8> {
        let mut v = vec![0u8; BlockDevice::size(f).unwrap() as usize];
        BlockDevice::read_exact_at(f, &mut v, 0).unwrap();
        v
    }

    fn req(disk: Option<Uuid>, part: Option<Uuid>) -> GrowRequest<'static> {
        GrowRequest {
            label: "ROOT",
            grow: true,
            disk_guid: disk,
            partition_guid: part,
        }
    }

    #[test]
    fn grows_root_to_the_end_and_moves_the_backup() {
        let g = keel_table(4 * MIB, &[]);
        let mut f = image_file(&g, 4 * MIB, 16 * MIB);
        let (_, before) = Gpt::read(&f, SS).unwrap();
        assert!(before.backup_misplaced);
        let (dg, pg) = (Uuid::new_v4(), Uuid::new_v4());
        let out = grow_disk(&mut f, SS, &req(Some(dg), Some(pg))).unwrap();
        assert!(out.wrote && out.wrote_mbr);
        let growth = out.growth.unwrap();
        let lbas = 16 * MIB / SS;
        assert_eq!(growth.old_last_lba, 7999);
        assert_eq!(growth.new_last_lba, lbas - 34);
        assert_eq!(growth.old_bytes(), 3904 * SS);
        assert_eq!(growth.new_bytes(), (lbas - 34 - 4096 + 1) * SS);
        assert_eq!(out.old_disk_guid, g.disk_guid);

        let (r, rep) = Gpt::read(&f, SS).unwrap();
        assert_eq!(rep.used, Which::Primary);
        assert!(rep.backup_error.is_none() && !rep.backup_misplaced);
        assert_eq!(r.last_usable_lba, lbas - 34);
        assert_eq!(r.disk_guid, dg);
        let root = r.by_name("ROOT").unwrap();
        assert_eq!((root.first_lba, root.last_lba), (4096, lbas - 34));
        assert_eq!(root.unique_guid, pg);
        assert_eq!(root.attributes, 1 << 59);
        // Every other partition is unchanged, GUIDs and attributes included.
        for p in g.partitions.iter().filter(|p| p.name != "ROOT") {
            assert_eq!(r.by_name(&p.name), Some(p));
        }
        // The protective MBR covers the grown disk.
        let mbr = contents(&f);
        assert_eq!(
            u32::from_le_bytes(mbr[458..462].try_into().unwrap()),
            (lbas - 1) as u32
        );
    }

    #[test]
    fn growing_twice_changes_nothing() {
        let g = keel_table(4 * MIB, &[]);
        let mut f = image_file(&g, 4 * MIB, 16 * MIB);
        let (dg, pg) = (Uuid::new_v4(), Uuid::new_v4());
        grow_disk(&mut f, SS, &req(Some(dg), Some(pg))).unwrap();
        let once = contents(&f);
        let out = grow_disk(&mut f, SS, &req(Some(dg), Some(pg))).unwrap();
        assert!(!out.wrote && !out.wrote_mbr && out.growth.is_none());
        assert_eq!(contents(&f), once);
        // Without new GUIDs (a later boot) nothing is written either.
        let out = grow_disk(&mut f, SS, &req(None, None)).unwrap();
        assert!(!out.wrote);
        assert_eq!(contents(&f), once);
        // The pure method agrees.
        let (mut t, _) = Gpt::read(&f, SS).unwrap();
        assert_eq!(t.grow_last_partition(16 * MIB, 7).unwrap(), None);
    }

    #[test]
    fn a_disk_that_did_not_grow_is_not_written() {
        let g = keel_table(4 * MIB, &[]);
        let mut f = image_file(&g, 4 * MIB, 4 * MIB);
        let (mut t, _) = Gpt::read(&f, SS).unwrap();
        let root = t.by_name("ROOT").unwrap().clone();
        // ROOT does not reach the end of the image: growing still extends it.
        let growth = t.grow_last_partition(4 * MIB, 7).unwrap().unwrap();
        assert_eq!(growth.old_last_usable, growth.new_last_usable);
        assert_eq!(growth.old_last_lba, root.last_lba);
        // Without growing and new GUIDs, nothing changes on disk.
        let before = contents(&f);
        let out = grow_disk(
            &mut f,
            SS,
            &GrowRequest {
                grow: false,
                ..req(None, None)
            },
        )
        .unwrap();
        assert!(!out.wrote && out.growth.is_none());
        assert_eq!(contents(&f), before);
    }

    #[test]
    fn bad_primary_crc_is_refused_without_writing() {
        // On the image's own size and on a grown disk (backup mid-disk).
        for grown in [4 * MIB, 16 * MIB] {
            let g = keel_table(4 * MIB, &[]);
            let mut f = image_file(&g, 4 * MIB, grown);
            let mut disk = contents(&f);
            disk[512 + 60] ^= 0xff; // the disk GUID: the header CRC breaks
            BlockDevice::write_all_at(&mut f, &disk, 0).unwrap();
            let err = grow_disk(&mut f, SS, &req(Some(Uuid::new_v4()), None)).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(
                    "the primary GPT is damaged (primary GPT header at byte 512: header CRC32 is"
                ),
                "{msg}"
            );
            assert!(msg.contains("using the backup copy read-only and not writing the disk"));
            assert_eq!(contents(&f), disk, "nothing was written");
            // The table is still readable from the backup.
            let (r, rep) = Gpt::read(&f, SS).unwrap();
            assert_eq!(rep.used, Which::Backup);
            assert_eq!(rep.backup_misplaced, grown != 4 * MIB);
            assert!(!rep.primary_torn);
            assert_eq!(r.partitions, g.partitions);
        }
    }

    #[test]
    fn bad_backup_is_refused_without_writing() {
        let g = keel_table(4 * MIB, &[]);
        let mut f = image_file(&g, 4 * MIB, 16 * MIB);
        let mut disk = contents(&f);
        let backup = (4 * MIB - SS) as usize;
        disk[backup] = b'X';
        BlockDevice::write_all_at(&mut f, &disk, 0).unwrap();
        let msg = grow_disk(&mut f, SS, &req(None, None))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(&format!(
                "the backup GPT is damaged (backup GPT header at byte {backup}: no \"EFI PART\" signature); using the primary copy"
            )),
            "{msg}"
        );
        assert_eq!(contents(&f), disk);
    }

    #[test]
    fn overlapping_partitions_are_refused_without_writing() {
        let g = keel_table(4 * MIB, &[]);
        // OEM reaches into ROOT, with valid CRCs: only validation sees it.
        let mut bad = g.clone();
        bad.partitions.iter_mut().for_each(|p| {
            if p.name == "OEM" {
                p.last_lba = 5000;
            }
        });
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(4 * MIB).unwrap();
        g.write_protective_mbr(&mut f).unwrap();
        // Gpt::write validates, so forge the entries through a valid table
        // and patch OEM's last LBA (entry 6, byte 40) in both arrays.
        g.write(&mut f).unwrap();
        let mut disk = contents(&f);
        let lbas = 4 * MIB / SS;
        for (hdr, arr) in [(1u64, 2u64), (lbas - 1, lbas - 33)] {
            let e = (arr * SS + 5 * 128 + 40) as usize;
            disk[e..e + 8].copy_from_slice(&5000u64.to_le_bytes());
            let a = (arr * SS) as usize;
            let crc = crc32fast::hash(&disk[a..a + 16384]);
            let h = (hdr * SS) as usize;
            disk[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
            disk[h + 16..h + 20].fill(0);
            let hc = crc32fast::hash(&disk[h..h + 92]);
            disk[h + 16..h + 20].copy_from_slice(&hc.to_le_bytes());
        }
        disk.resize(16 * MIB as usize, 0);
        BlockDevice::write_all_at(&mut f, &disk, 0).unwrap();
        let msg = grow_disk(&mut f, SS, &req(Some(Uuid::new_v4()), None))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("partitions 6 and 7 overlap"), "{msg}");
        assert_eq!(contents(&f), disk);
        // The pure method refuses an overlapping table in memory too.
        let mut b = bad;
        assert!(matches!(
            b.grow_last_partition(16 * MIB, 7),
            Err(GrowError::Gpt(GptError::Overlap { a: 6, b: 7 }))
        ));
    }

    #[test]
    fn root_not_last_is_refused_with_a_clear_message() {
        let mut g = keel_table(4 * MIB, &[]);
        g.set_partition(Partition {
            number: 8,
            type_guid: types::LINUX_DATA,
            unique_guid: Uuid::new_v4(),
            first_lba: 8000,
            last_lba: 8100,
            attributes: 0,
            name: "EXTRA".into(),
        })
        .unwrap();
        let mut f = image_file(&g, 4 * MIB, 16 * MIB);
        let before = contents(&f);
        let msg = grow_disk(&mut f, SS, &req(Some(Uuid::new_v4()), None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "partition 7 (ROOT) is not the last partition: partition 8 (EXTRA) starts at LBA 8000, \
             after it; only the last partition can grow"
        );
        assert_eq!(contents(&f), before);
    }

    #[test]
    fn missing_usr_b_still_grows() {
        let g = keel_table(4 * MIB, &[4, 5]);
        let mut f = image_file(&g, 4 * MIB, 16 * MIB);
        let out = grow_disk(&mut f, SS, &req(None, None)).unwrap();
        assert!(out.growth.is_some());
        let (r, _) = Gpt::read(&f, SS).unwrap();
        assert!(r.by_name("USR-B").is_none());
        assert_eq!(r.partitions.len(), 5);
    }

    #[test]
    fn missing_root_is_named() {
        let g = keel_table(4 * MIB, &[7]);
        let mut f = image_file(&g, 4 * MIB, 16 * MIB);
        let before = contents(&f);
        let msg = grow_disk(&mut f, SS, &req(None, None))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "no partition labelled ROOT in the GPT");
        assert_eq!(contents(&f), before);
    }

    #[test]
    fn attribute_bits_survive_bit_for_bit() {
        let mut g = keel_table(4 * MIB, &[]);
        // Every bit set on USR-B (priority 15, tries 15, successful, the DPS
        // bits, reserved bits) and unusual bits on ROOT.
        g.by_number_mut(4).unwrap().attributes = u64::MAX;
        g.by_number_mut(7).unwrap().attributes = 1 << 59 | 1 << 2 | 0xdead << 16;
        let mut f = image_file(&g, 4 * MIB, 16 * MIB);
        grow_disk(&mut f, SS, &req(Some(Uuid::new_v4()), None)).unwrap();
        let (r, _) = Gpt::read(&f, SS).unwrap();
        assert_eq!(r.partitions[3].attributes, u64::MAX);
        let b = Prio::from_attributes(u64::MAX);
        assert_eq!((b.priority, b.tries, b.successful), (15, 15, true));
        assert_eq!(r.partitions[6].attributes, 1 << 59 | 1 << 2 | 0xdead << 16);
    }

    #[test]
    fn shrunk_disk_is_refused() {
        let mut g = keel_table(4 * MIB, &[]);
        let err = g.grow_last_partition(3 * MIB, 7).unwrap_err();
        assert!(matches!(err, GrowError::Shrunk { number: 7, .. }), "{err}");
        assert!(err.to_string().contains("the disk shrank"), "{err}");
        // Unchanged on refusal.
        assert_eq!(g.last_usable_lba, 4 * MIB / SS - 34);
    }

    /// A device that loses power after `budget` sectors: later writes (and
    /// the rest of a write in progress) are dropped, and fail.
    struct PowerCut {
        disk: Vec<u8>,
        budget: Cell<u64>,
    }

    impl BlockDevice for PowerCut {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.disk.read_exact_at(buf, offset)
        }
        fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            for (i, s) in buf.chunks(SS as usize).enumerate() {
                if self.budget.get() == 0 {
                    return Err(io::Error::other("power cut"));
                }
                self.budget.set(self.budget.get() - 1);
                self.disk.write_all_at(s, offset + i as u64 * SS)?;
            }
            Ok(())
        }
        fn size(&self) -> io::Result<u64> {
            self.disk.size()
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A power cut after any sector of the growth leaves a disk that a
    /// second run completes to exactly the uninterrupted result.
    #[test]
    fn a_power_cut_at_any_sector_is_completed_by_the_next_run() {
        let g = keel_table(4 * MIB, &[]);
        let f = image_file(&g, 4 * MIB, 8 * MIB);
        let start = contents(&f);
        let (dg, pg) = (Uuid::new_v4(), Uuid::new_v4());
        let mut whole = PowerCut {
            disk: start.clone(),
            budget: Cell::new(u64::MAX),
        };
        grow_disk(&mut whole, SS, &req(Some(dg), Some(pg))).unwrap();
        let sectors = u64::MAX - whole.budget.get();
        assert_eq!(sectors, 1 + 2 * (32 + 1), "MBR, backup, primary");
        let mut torn_seen = false;
        for cut in 0..sectors {
            let mut d = PowerCut {
                disk: start.clone(),
                budget: Cell::new(cut),
            };
            assert!(grow_disk(&mut d, SS, &req(Some(dg), Some(pg))).is_err());
            // The interrupted disk always reads, and the next boot finishes.
            let (_, rep) = Gpt::read(&d.disk, SS).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            torn_seen |= rep.primary_torn;
            d.budget.set(u64::MAX);
            let out = grow_disk(&mut d, SS, &req(Some(dg), Some(pg)))
                .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert!(out.wrote || out.wrote_mbr, "cut {cut}");
            assert!(
                d.disk == whole.disk,
                "cut {cut}: differs from the uncut result"
            );
        }
        assert!(torn_seen, "some cut leaves the primary torn");
    }
}
