//! The on-disk GPT: protective MBR, primary and backup headers, entry arrays.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use thiserror::Error;
use uuid::Uuid;

/// Entries Keel writes in a new table (the UEFI minimum array size).
pub const NUM_ENTRIES: u32 = 128;
/// Size of one entry Keel writes.
pub const ENTRY_SIZE: u32 = 128;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;
/// Upper bound on the entry array we accept (bytes): 1 MiB is far beyond any
/// real table and keeps a hostile header from making us allocate gigabytes.
const MAX_ENTRY_ARRAY: u64 = 1 << 20;

/// Which of the two headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The header at LBA 1.
    Primary,
    /// The header at the end of the disk.
    Backup,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Which::Primary => "primary",
            Which::Backup => "backup",
        })
    }
}

/// Errors reading or writing a GPT. Each names the header and byte offset.
#[derive(Debug, Error)]
pub enum GptError {
    /// An I/O error at an offset.
    #[error("{what} at byte {offset}: {source}")]
    Io {
        what: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The device cannot hold a GPT at all.
    #[error("device of {size} bytes is too small for a GPT")]
    TooSmall { size: u64 },
    /// The sector size is not one GPT supports here.
    #[error("unsupported sector size {0} (expected 512 or 4096)")]
    SectorSize(u64),
    /// No "EFI PART" signature.
    #[error("{which} GPT header at byte {offset}: no \"EFI PART\" signature")]
    Signature { which: Which, offset: u64 },
    /// Header size out of range.
    #[error("{which} GPT header at byte {offset}: header size {size} out of range (92..={max})")]
    HeaderSize {
        which: Which,
        offset: u64,
        size: u32,
        max: u64,
    },
    /// Header CRC mismatch.
    #[error("{which} GPT header at byte {offset}: header CRC32 is {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        which: Which,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    /// The header does not say it lives where it was read.
    #[error(
        "{which} GPT header at byte {offset}: says it is at LBA {found}, expected LBA {expected}"
    )]
    MyLba {
        which: Which,
        offset: u64,
        expected: u64,
        found: u64,
    },
    /// Entry array geometry out of range.
    #[error("{which} GPT header at byte {offset}: entry array of {count} entries of {size} bytes is not supported")]
    EntryGeometry {
        which: Which,
        offset: u64,
        count: u32,
        size: u32,
    },
    /// A range of LBAs lies outside the disk or overlaps the headers.
    #[error(
        "{which} GPT header at byte {offset}: {field} {value} is outside the disk ({lbas} sectors)"
    )]
    OutOfDisk {
        which: Which,
        offset: u64,
        field: &'static str,
        value: u64,
        lbas: u64,
    },
    /// Usable range inverted.
    #[error("{which} GPT header at byte {offset}: first usable LBA {first} is after last usable LBA {last}")]
    UsableRange {
        which: Which,
        offset: u64,
        first: u64,
        last: u64,
    },
    /// Entry array CRC mismatch.
    #[error("{which} GPT entry array at byte {offset}: CRC32 is {stored:#010x}, computed {computed:#010x}")]
    EntriesCrc {
        which: Which,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    /// A partition is inverted or outside the usable range.
    #[error("partition {number} (entry at byte {offset}): LBAs {first}..={last} outside the usable range {usable_first}..={usable_last}")]
    PartitionRange {
        number: u32,
        offset: u64,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    /// Two partitions overlap.
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: u32, b: u32 },
    /// Neither header is usable.
    #[error("no valid GPT: {primary}; {backup}")]
    BothBad {
        primary: Box<GptError>,
        backup: Box<GptError>,
    },
    /// A partition number that does not exist or cannot exist.
    #[error("no partition number {0} in the table")]
    NoSuchPartition(u32),
    /// Invalid partition name (too long).
    #[error("partition name {0:?} is longer than 36 UTF-16 code units")]
    NameTooLong(String),
}

/// Something GPT can be read from and written to: a file or a block device.
pub trait BlockDevice {
    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Make written data durable.
    fn sync(&mut self) -> io::Result<()>;
}

impl BlockDevice for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        // Seeking to the end works for regular files and block devices alike
        // (a block device's metadata length is 0).
        use std::io::Seek;
        let mut f = self;
        f.seek(io::SeekFrom::End(0))
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

impl BlockDevice for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|e| *e <= self.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::WriteZero)?;
        let end = start
            .checked_add(buf.len())
            .filter(|e| *e <= self.len())
            .ok_or(io::ErrorKind::WriteZero)?;
        self[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number (entry index + 1).
    pub number: u32,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID.
    pub unique_guid: Uuid,
    /// First LBA, inclusive.
    pub first_lba: u64,
    /// Last LBA, inclusive.
    pub last_lba: u64,
    /// Attribute bits (see [`crate::prio`] for bits 48–56).
    pub attributes: u64,
    /// Partition name (the "label").
    pub name: String,
}

impl Partition {
    /// Size in sectors.
    pub fn sectors(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
}

/// What reading found, beyond the table itself.
#[derive(Debug)]
pub struct ReadReport {
    /// The header the table was taken from.
    pub used: Which,
    /// Why the primary header was not usable, if it was not.
    pub primary_error: Option<GptError>,
    /// Why the backup header was not usable, if it was not.
    pub backup_error: Option<GptError>,
    /// The backup header is valid but not at the last sector (the disk grew).
    pub backup_misplaced: bool,
    /// The primary's only fault is that its header is older than its entry
    /// array, and that array is exactly the (valid) backup's: the signature
    /// of a table write cut between the primary entries and the primary
    /// header (see [`Gpt::write`]). Finishing that write is safe; any other
    /// damage is not ours to repair blindly.
    pub primary_torn: bool,
}

/// A partition table in memory.
#[derive(Debug, Clone)]
pub struct Gpt {
    /// Logical sector size in bytes.
    pub sector_size: u64,
    /// Disk GUID.
    pub disk_guid: Uuid,
    /// First LBA partitions may use.
    pub first_usable_lba: u64,
    /// Last LBA partitions may use.
    pub last_usable_lba: u64,
    /// Used entries, sorted by number.
    pub partitions: Vec<Partition>,
    num_entries: u32,
    entry_size: u32,
    /// The entry array as read, so bytes Keel does not interpret survive a rewrite.
    raw_entries: Vec<u8>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn guid_at(b: &[u8], at: usize) -> Uuid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Uuid::from_bytes_le(a)
}

struct Header {
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Uuid,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn io_err(what: &'static str, offset: u64) -> impl FnOnce(io::Error) -> GptError {
    move |source| GptError::Io {
        what,
        offset,
        source,
    }
}

fn entries_sectors(num: u32, size: u32, ss: u64) -> u64 {
    (u64::from(num) * u64::from(size)).div_ceil(ss)
}

impl Gpt {
    /// A new, empty table for a disk of `disk_size` bytes with Keel's geometry.
    pub fn new(disk_size: u64, sector_size: u64) -> Result<Self, GptError> {
        check_sector_size(sector_size)?;
        let lbas = disk_size / sector_size;
        let es = entries_sectors(NUM_ENTRIES, ENTRY_SIZE, sector_size);
        if lbas < 2 * (es + 2) + 1 {
            return Err(GptError::TooSmall { size: disk_size });
        }
        Ok(Gpt {
            sector_size,
            disk_guid: Uuid::new_v4(),
            first_usable_lba: 2 + es,
            last_usable_lba: lbas - 2 - es,
            partitions: Vec::new(),
            num_entries: NUM_ENTRIES,
            entry_size: ENTRY_SIZE,
            raw_entries: vec![0; (NUM_ENTRIES * ENTRY_SIZE) as usize],
        })
    }

    /// Read the table from `dev`: the primary header if valid, else the backup.
    pub fn read(dev: &impl BlockDevice, sector_size: u64) -> Result<(Self, ReadReport), GptError> {
        check_sector_size(sector_size)?;
        let size = dev.size().map_err(io_err("reading device size", 0))?;
        let lbas = size / sector_size;
        if lbas < 6 {
            return Err(GptError::TooSmall { size });
        }
        let primary = read_one(dev, sector_size, lbas, 1, Which::Primary);
        let backup_lba = match &primary {
            Ok(g) => g.1,
            Err(_) => lbas - 1,
        };
        let mut backup = read_one(dev, sector_size, lbas, backup_lba, Which::Backup);
        let mut backup_at = backup_lba;
        if primary.is_err() && backup.is_err() {
            // A disk that grew keeps its backup where the image ended. The
            // damaged primary's alternate-LBA field is only a hint: the
            // backup found there is validated like any other (its own LBA
            // field, both CRCs, the partitions).
            if let Some(hint) = alternate_hint(dev, sector_size, lbas) {
                if let Ok(b) = read_one(dev, sector_size, lbas, hint, Which::Backup) {
                    backup = Ok(b);
                    backup_at = hint;
                }
            }
        }
        match (primary, backup) {
            (Ok((gpt, alt)), backup) => {
                let backup_error = backup.err();
                let report = ReadReport {
                    used: Which::Primary,
                    primary_error: None,
                    backup_misplaced: backup_error.is_none() && alt != lbas - 1,
                    backup_error,
                    primary_torn: false,
                };
                Ok((gpt, report))
            }
            (Err(pe), Ok((gpt, _))) => {
                let primary_torn = matches!(
                    pe,
                    GptError::EntriesCrc { which: Which::Primary, computed, .. }
                        if computed == crc32fast::hash(&gpt.raw_entries)
                );
                Ok((
                    gpt,
                    ReadReport {
                        used: Which::Backup,
                        primary_error: Some(pe),
                        backup_error: None,
                        backup_misplaced: backup_at != lbas - 1,
                        primary_torn,
                    },
                ))
            }
            (Err(pe), Err(be)) => Err(GptError::BothBad {
                primary: Box::new(pe),
                backup: Box::new(be),
            }),
        }
    }

    /// Find a partition by name.
    pub fn by_name(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// Find a partition by number.
    pub fn by_number_mut(&mut self, number: u32) -> Result<&mut Partition, GptError> {
        self.partitions
            .iter_mut()
            .find(|p| p.number == number)
            .ok_or(GptError::NoSuchPartition(number))
    }

    /// Add (or replace) the partition with `p.number`, checking its range and
    /// that it overlaps nothing.
    pub fn set_partition(&mut self, p: Partition) -> Result<(), GptError> {
        if p.number == 0 || p.number > self.num_entries {
            return Err(GptError::NoSuchPartition(p.number));
        }
        if p.name.encode_utf16().count() > 36 {
            return Err(GptError::NameTooLong(p.name));
        }
        self.partitions.retain(|q| q.number != p.number);
        self.partitions.push(p);
        self.partitions.sort_by_key(|p| p.number);
        self.validate_partitions()
    }

    /// Move the end of the usable range to the end of a disk of `disk_size`
    /// bytes (after the disk grew). The backup moves there on the next write.
    pub fn fit_to_disk(&mut self, disk_size: u64) -> Result<(), GptError> {
        let lbas = disk_size / self.sector_size;
        let es = entries_sectors(self.num_entries, self.entry_size, self.sector_size);
        let last = lbas
            .checked_sub(2 + es)
            .filter(|l| *l >= self.first_usable_lba)
            .ok_or(GptError::TooSmall { size: disk_size })?;
        if self.partitions.iter().any(|p| p.last_lba > last) {
            return Err(GptError::TooSmall { size: disk_size });
        }
        self.last_usable_lba = last;
        Ok(())
    }

    /// Check every partition lies inside the usable range and none overlap.
    pub fn validate(&self) -> Result<(), GptError> {
        self.validate_partitions()
    }

    fn validate_partitions(&self) -> Result<(), GptError> {
        for p in &self.partitions {
            if p.first_lba > p.last_lba
                || p.first_lba < self.first_usable_lba
                || p.last_lba > self.last_usable_lba
            {
                return Err(GptError::PartitionRange {
                    number: p.number,
                    offset: u64::from(p.number - 1) * u64::from(self.entry_size),
                    first: p.first_lba,
                    last: p.last_lba,
                    usable_first: self.first_usable_lba,
                    usable_last: self.last_usable_lba,
                });
            }
        }
        let mut by_start: Vec<&Partition> = self.partitions.iter().collect();
        by_start.sort_by_key(|p| p.first_lba);
        for w in by_start.windows(2) {
            if w[1].first_lba <= w[0].last_lba {
                return Err(GptError::Overlap {
                    a: w[0].number,
                    b: w[1].number,
                });
            }
        }
        Ok(())
    }

    fn render_entries(&self) -> Result<Vec<u8>, GptError> {
        let es = self.entry_size as usize;
        let mut raw = self.raw_entries.clone();
        // Clear the standard 128 bytes of every entry, then write the used ones;
        // bytes past 128 in larger entries are preserved.
        for i in 0..self.num_entries as usize {
            raw[i * es..i * es + 128].fill(0);
        }
        for p in &self.partitions {
            let at = (p.number as usize - 1) * es;
            let e = &mut raw[at..at + 128];
            e[0..16].copy_from_slice(&p.type_guid.to_bytes_le());
            e[16..32].copy_from_slice(&p.unique_guid.to_bytes_le());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            let units: Vec<u16> = p.name.encode_utf16().collect();
            if units.len() > 36 {
                return Err(GptError::NameTooLong(p.name.clone()));
            }
            for (i, u) in units.iter().enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        Ok(raw)
    }

    fn render_header(
        &self,
        my_lba: u64,
        alternate: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> Vec<u8> {
        let mut h = vec![0u8; self.sector_size as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Write both tables: the backup (entries, then header at the last sector)
    /// first, then the primary, then sync. A power cut between the two leaves
    /// one valid table of the old or the new contents, never neither.
    pub fn write(&self, dev: &mut impl BlockDevice) -> Result<(), GptError> {
        self.validate_partitions()?;
        let ss = self.sector_size;
        let size = dev.size().map_err(io_err("reading device size", 0))?;
        let lbas = size / ss;
        let es = entries_sectors(self.num_entries, self.entry_size, ss);
        let backup_lba = lbas - 1;
        let backup_entries = backup_lba - es;
        if self.last_usable_lba >= backup_entries || self.first_usable_lba < 2 + es {
            return Err(GptError::OutOfDisk {
                which: Which::Backup,
                offset: backup_lba * ss,
                field: "last usable LBA",
                value: self.last_usable_lba,
                lbas,
            });
        }
        let entries = self.render_entries()?;
        let crc = crc32fast::hash(&entries);
        dev.write_all_at(&entries, backup_entries * ss)
            .map_err(io_err("writing backup GPT entries", backup_entries * ss))?;
        let bh = self.render_header(backup_lba, 1, backup_entries, crc);
        dev.write_all_at(&bh, backup_lba * ss)
            .map_err(io_err("writing backup GPT header", backup_lba * ss))?;
        dev.sync().map_err(io_err("syncing", 0))?;
        dev.write_all_at(&entries, 2 * ss)
            .map_err(io_err("writing primary GPT entries", 2 * ss))?;
        let ph = self.render_header(1, backup_lba, 2, crc);
        dev.write_all_at(&ph, ss)
            .map_err(io_err("writing primary GPT header", ss))?;
        dev.sync().map_err(io_err("syncing", 0))?;
        Ok(())
    }

    /// Write a protective MBR covering the disk (for new images and after growth).
    pub fn write_protective_mbr(&self, dev: &mut impl BlockDevice) -> Result<(), GptError> {
        let size = dev.size().map_err(io_err("reading device size", 0))?;
        let lbas = size / self.sector_size;
        let mut mbr = vec![0u8; 512];
        dev.read_exact_at(&mut mbr, 0)
            .map_err(io_err("reading MBR", 0))?;
        let e = &mut mbr[446..462];
        e.fill(0);
        e[1] = 0x00; // CHS start (0/0/2) as in every GPT tool
        e[2] = 0x02;
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let count = u32::try_from(lbas - 1).unwrap_or(u32::MAX);
        e[12..16].copy_from_slice(&count.to_le_bytes());
        mbr[462..510].fill(0);
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        dev.write_all_at(&mbr, 0)
            .map_err(io_err("writing protective MBR", 0))
    }
}

/// The alternate-LBA field of a primary header that has the GPT signature,
/// when it points inside the disk somewhere other than the last sector.
fn alternate_hint(dev: &impl BlockDevice, ss: u64, lbas: u64) -> Option<u64> {
    let mut buf = vec![0u8; ss as usize];
    dev.read_exact_at(&mut buf, ss).ok()?;
    if &buf[0..8] != SIGNATURE {
        return None;
    }
    let alt = le_u64(&buf, 32);
    (alt > 1 && alt < lbas - 1).then_some(alt)
}

fn check_sector_size(ss: u64) -> Result<(), GptError> {
    if ss == 512 || ss == 4096 {
        Ok(())
    } else {
        Err(GptError::SectorSize(ss))
    }
}

/// Read and fully validate one header and its entries. Returns the table and
/// the header's alternate LBA.
fn read_one(
    dev: &impl BlockDevice,
    ss: u64,
    lbas: u64,
    lba: u64,
    which: Which,
) -> Result<(Gpt, u64), GptError> {
    let offset = lba * ss;
    let mut buf = vec![0u8; ss as usize];
    dev.read_exact_at(&mut buf, offset)
        .map_err(io_err("reading GPT header", offset))?;
    let h = parse_header(&buf, which, offset, lba, lbas, ss)?;
    let len = u64::from(h.num_entries) * u64::from(h.entry_size);
    let eoff = h.entries_lba * ss;
    let mut raw = vec![0u8; len as usize];
    dev.read_exact_at(&mut raw, eoff)
        .map_err(io_err("reading GPT entries", eoff))?;
    let computed = crc32fast::hash(&raw);
    if computed != h.entries_crc {
        return Err(GptError::EntriesCrc {
            which,
            offset: eoff,
            stored: h.entries_crc,
            computed,
        });
    }
    let mut partitions = Vec::new();
    for i in 0..h.num_entries as usize {
        let e = &raw[i * h.entry_size as usize..][..128];
        let type_guid = guid_at(e, 0);
        if type_guid.is_nil() {
            continue;
        }
        let units: Vec<u16> = (0..36)
            .map(|k| u16::from_le_bytes([e[56 + 2 * k], e[57 + 2 * k]]))
            .take_while(|u| *u != 0)
            .collect();
        partitions.push(Partition {
            number: i as u32 + 1,
            type_guid,
            unique_guid: guid_at(e, 16),
            first_lba: le_u64(e, 32),
            last_lba: le_u64(e, 40),
            attributes: le_u64(e, 48),
            name: String::from_utf16_lossy(&units),
        });
    }
    let gpt = Gpt {
        sector_size: ss,
        disk_guid: h.disk_guid,
        first_usable_lba: h.first_usable,
        last_usable_lba: h.last_usable,
        partitions,
        num_entries: h.num_entries,
        entry_size: h.entry_size,
        raw_entries: raw,
    };
    gpt.validate_partitions()?;
    Ok((gpt, h.alternate_lba))
}

fn parse_header(
    buf: &[u8],
    which: Which,
    offset: u64,
    lba: u64,
    lbas: u64,
    ss: u64,
) -> Result<Header, GptError> {
    if &buf[0..8] != SIGNATURE {
        return Err(GptError::Signature { which, offset });
    }
    let size = le_u32(buf, 12);
    if size < HEADER_SIZE || u64::from(size) > ss {
        return Err(GptError::HeaderSize {
            which,
            offset,
            size,
            max: ss,
        });
    }
    let stored = le_u32(buf, 16);
    let mut copy = buf[..size as usize].to_vec();
    copy[16..20].fill(0);
    let computed = crc32fast::hash(&copy);
    if stored != computed {
        return Err(GptError::HeaderCrc {
            which,
            offset,
            stored,
            computed,
        });
    }
    let my = le_u64(buf, 24);
    if my != lba {
        return Err(GptError::MyLba {
            which,
            offset,
            expected: lba,
            found: my,
        });
    }
    let h = Header {
        alternate_lba: le_u64(buf, 32),
        first_usable: le_u64(buf, 40),
        last_usable: le_u64(buf, 48),
        disk_guid: guid_at(buf, 56),
        entries_lba: le_u64(buf, 72),
        num_entries: le_u32(buf, 80),
        entry_size: le_u32(buf, 84),
        entries_crc: le_u32(buf, 88),
    };
    let array = u64::from(h.num_entries) * u64::from(h.entry_size);
    if h.entry_size < 128
        || !h.entry_size.is_power_of_two()
        || h.num_entries == 0
        || array > MAX_ENTRY_ARRAY
    {
        return Err(GptError::EntryGeometry {
            which,
            offset,
            count: h.num_entries,
            size: h.entry_size,
        });
    }
    let es = array.div_ceil(ss);
    let out = |field, value| GptError::OutOfDisk {
        which,
        offset,
        field,
        value,
        lbas,
    };
    if h.entries_lba < 2 || h.entries_lba.saturating_add(es) > lbas || h.entries_lba == lba {
        return Err(out("entry array LBA", h.entries_lba));
    }
    if h.alternate_lba >= lbas || h.alternate_lba == 0 {
        return Err(out("alternate header LBA", h.alternate_lba));
    }
    if h.last_usable >= lbas - 1 || h.first_usable < 2 {
        return Err(out("usable LBA range", h.last_usable));
    }
    if h.first_usable > h.last_usable {
        return Err(GptError::UsableRange {
            which,
            offset,
            first: h.first_usable,
            last: h.last_usable,
        });
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    const MIB: u64 = 1 << 20;

    fn sample(size: u64) -> (Gpt, Vec<u8>) {
        let mut disk = vec![0u8; size as usize];
        let mut g = Gpt::new(size, 512).unwrap();
        g.set_partition(Partition {
            number: 1,
            type_guid: types::ESP,
            unique_guid: Uuid::new_v4(),
            first_lba: 2048,
            last_lba: 4095,
            attributes: 0,
            name: "EFI-SYSTEM".into(),
        })
        .unwrap();
        g.set_partition(Partition {
            number: 2,
            type_guid: types::USR_X86_64,
            unique_guid: Uuid::new_v4(),
            first_lba: 4096,
            last_lba: 6143,
            attributes: 1 << 48 | 1 << 56,
            name: "USR-A".into(),
        })
        .unwrap();
        g.write_protective_mbr(&mut disk).unwrap();
        g.write(&mut disk).unwrap();
        (g, disk)
    }

    #[test]
    fn roundtrip() {
        let (g, disk) = sample(8 * MIB);
        let (r, rep) = Gpt::read(&disk, 512).unwrap();
        assert_eq!(rep.used, Which::Primary);
        assert!(rep.backup_error.is_none());
        assert!(!rep.backup_misplaced);
        assert_eq!(r.partitions, g.partitions);
        assert_eq!(r.disk_guid, g.disk_guid);
        assert_eq!(r.by_name("USR-A").unwrap().number, 2);
        assert_eq!(&disk[510..512], &[0x55, 0xAA]);
        assert_eq!(disk[450], 0xEE);
    }

    #[test]
    fn corrupt_primary_is_read_from_backup() {
        let (g, mut disk) = sample(8 * MIB);
        disk[512 + 60] ^= 0xff; // inside the disk GUID: header CRC breaks
        let (r, rep) = Gpt::read(&disk, 512).unwrap();
        assert_eq!(rep.used, Which::Backup);
        let msg = rep.primary_error.unwrap().to_string();
        assert!(
            msg.starts_with("primary GPT header at byte 512: header CRC32"),
            "{msg}"
        );
        assert_eq!(r.partitions, g.partitions);
        // Writing it back repairs the primary.
        r.write(&mut disk).unwrap();
        let (_, rep) = Gpt::read(&disk, 512).unwrap();
        assert_eq!(rep.used, Which::Primary);
    }

    #[test]
    fn corrupt_entries_named_with_offset() {
        let (_, mut disk) = sample(8 * MIB);
        disk[1024 + 128 + 48] ^= 1; // attributes of entry 2 in the primary array
        let (_, rep) = Gpt::read(&disk, 512).unwrap();
        assert_eq!(rep.used, Which::Backup);
        assert_eq!(
            rep.primary_error.unwrap().to_string(),
            format!(
                "primary GPT entry array at byte 1024: CRC32 is {:#010x}, computed {:#010x}",
                crc32fast::hash(&{
                    let mut d = disk[1024..1024 + 16384].to_vec();
                    d[128 + 48] ^= 1;
                    d
                }),
                crc32fast::hash(&disk[1024..1024 + 16384])
            )
        );
    }

    #[test]
    fn both_bad_is_an_error_naming_both() {
        let (_, mut disk) = sample(8 * MIB);
        disk[512] = b'X';
        let last = disk.len() - 512;
        disk[last] = b'X';
        let err = Gpt::read(&disk, 512).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "no valid GPT: primary GPT header at byte 512: no \"EFI PART\" signature; \
                 backup GPT header at byte {last}: no \"EFI PART\" signature"
            )
        );
    }

    #[test]
    fn overlap_rejected() {
        let (mut g, _) = sample(8 * MIB);
        let err = g
            .set_partition(Partition {
                number: 3,
                type_guid: types::LINUX_DATA,
                unique_guid: Uuid::new_v4(),
                first_lba: 6000,
                last_lba: 7000,
                attributes: 0,
                name: "OEM".into(),
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "partitions 2 and 3 overlap");
    }

    #[test]
    fn overlap_on_disk_rejected_on_read() {
        let (g, mut disk) = sample(8 * MIB);
        // Forge an overlapping entry 3 with valid CRCs, bypassing set_partition.
        let mut bad = g.clone();
        bad.partitions.push(Partition {
            number: 3,
            type_guid: types::LINUX_DATA,
            unique_guid: Uuid::new_v4(),
            first_lba: 5000,
            last_lba: 7000,
            attributes: 0,
            name: "OEM".into(),
        });
        let entries = bad.render_entries().unwrap();
        let crc = crc32fast::hash(&entries);
        let lbas = disk.len() as u64 / 512;
        disk[1024..1024 + entries.len()].copy_from_slice(&entries);
        disk[512..1024].copy_from_slice(&bad.render_header(1, lbas - 1, 2, crc));
        let be = (lbas - 33) as usize * 512;
        disk[be..be + entries.len()].copy_from_slice(&entries);
        let bl = (lbas - 1) as usize * 512;
        disk[bl..bl + 512].copy_from_slice(&bad.render_header(lbas - 1, 1, lbas - 33, crc));
        let err = Gpt::read(&disk, 512).unwrap_err().to_string();
        assert!(err.contains("partitions 2 and 3 overlap"), "{err}");
    }

    #[test]
    fn grown_disk_reports_misplaced_backup_and_fits() {
        let (_, mut disk) = sample(8 * MIB);
        disk.resize(16 * MIB as usize, 0);
        let (mut g, rep) = Gpt::read(&disk, 512).unwrap();
        assert!(rep.backup_misplaced);
        g.fit_to_disk(16 * MIB).unwrap();
        g.write(&mut disk).unwrap();
        let (g2, rep) = Gpt::read(&disk, 512).unwrap();
        assert!(!rep.backup_misplaced);
        assert_eq!(g2.last_usable_lba, 16 * MIB / 512 - 34);
    }

    #[test]
    fn too_small() {
        assert!(matches!(
            Gpt::new(4096, 512),
            Err(GptError::TooSmall { size: 4096 })
        ));
        let disk = vec![0u8; 1024];
        assert!(Gpt::read(&disk, 512).is_err());
    }

    #[test]
    fn hostile_geometry_is_rejected_not_allocated() {
        let (g, mut disk) = sample(8 * MIB);
        let lbas = disk.len() as u64 / 512;
        let mut h = g.render_header(1, lbas - 1, 2, 0);
        h[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        disk[512..1024].copy_from_slice(&h);
        let (_, rep) = Gpt::read(&disk, 512).unwrap();
        assert!(matches!(
            rep.primary_error,
            Some(GptError::EntryGeometry { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8192)) {
            let _ = Gpt::read(&data, 512);
        }

        #[test]
        fn flipped_bytes_never_panic(pos in 0usize..(34 * 512), end in proptest::prelude::any::<bool>(), val in proptest::prelude::any::<u8>()) {
            // Flip a byte in the primary (start) or backup (end) header and entries.
            let (_, mut disk) = sample(8 * MIB);
            let p = if end { disk.len() - 1 - pos } else { pos };
            disk[p] = val;
            let _ = Gpt::read(&disk, 512);
        }
    }
}
