//! The writer's order against a recording fake device.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use keel_release::Sha256;

use crate::image::{Block, Check, ImageError};
use crate::write::{write_image, Job, Progress, Target, WriteError, HEAD};

const MIB: u64 = 1 << 20;

/// A device in memory that records writes and can fail or lie.
#[derive(Debug)]
pub(crate) struct Fake {
    pub disk: Vec<u8>,
    pub writes: Vec<(u64, u64)>,
    /// Fail writes at or past this offset.
    pub fail_at: Option<u64>,
    /// Reads of this offset come back with one byte flipped.
    pub corrupt_read: Option<u64>,
    pub syncs: usize,
}

impl Fake {
    pub fn new(size: u64, fill: u8) -> Fake {
        Fake {
            disk: vec![fill; size as usize],
            writes: vec![],
            fail_at: None,
            corrupt_read: None,
            syncs: 0,
        }
    }
}

impl Target for Fake {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if let Some(f) = self.fail_at {
            if offset + buf.len() as u64 > f && buf.iter().any(|b| *b != 0) {
                return Err(io::Error::other("injected I/O error"));
            }
        }
        self.writes.push((offset, buf.len() as u64));
        self.disk[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.copy_from_slice(&self.disk[offset as usize..offset as usize + buf.len()]);
        if let Some(c) = self.corrupt_read {
            if c >= offset && c < offset + buf.len() as u64 {
                buf[(c - offset) as usize] ^= 1;
            }
        }
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        Ok(())
    }
    fn drop_cache(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) fn image(size: u64) -> Vec<u8> {
    (0..size)
        .map(|i| {
            if (i / MIB) % 3 == 1 {
                0
            } else {
                (i % 251) as u8 + 1
            }
        })
        .collect()
}

fn blocks(img: &[u8], bs: usize) -> Vec<Result<Block, ImageError>> {
    img.chunks(bs)
        .enumerate()
        .map(|(i, c)| {
            Ok(Block {
                offset: (i * bs) as u64,
                data: std::sync::Arc::new(c.to_vec()),
                check: if c.iter().all(|b| *b == 0) {
                    Check::Zero
                } else {
                    Check::Sha256(Sha256::of(c))
                },
                compressed: c.len() as u64,
            })
        })
        .collect()
}

fn run(
    t: &mut Fake,
    bl: Vec<Result<Block, ImageError>>,
    image_size: u64,
    cancel: &AtomicBool,
    before: &mut crate::write::BeforeTable<'_>,
) -> Result<crate::write::Written, WriteError> {
    let dev = t.disk.len() as u64;
    let mut seen = Vec::new();
    let mut progress = |p: Progress| seen.push(p);
    write_image(
        t,
        &mut bl.into_iter(),
        Job {
            image_size,
            device_size: dev,
            verify: true,
            cancel,
            progress: &mut progress,
            before_table: before,
        },
    )
}

#[test]
fn writes_everything_and_the_table_last() {
    let img = image(6 * MIB);
    let mut t = Fake::new(10 * MIB, 0xee);
    let no = AtomicBool::new(false);
    let mut head_seen = None;
    let mut before = |h: &[u8], _: &mut dyn Target| {
        head_seen = Some(h.to_vec());
        Ok(())
    };
    let w = run(
        &mut t,
        blocks(&img, 512 << 10),
        img.len() as u64,
        &no,
        &mut before,
    )
    .expect("install");
    assert_eq!(w.bytes, 6 * MIB);
    assert_eq!(w.zero_bytes, 2 * MIB);
    assert_eq!(&t.disk[..img.len()], &img[..]);
    // the old table at the device's end is gone
    assert!(t.disk[(9 * MIB) as usize..].iter().all(|b| *b == 0));
    assert_eq!(head_seen.as_deref(), Some(&img[..HEAD as usize]));
    // the last data write is the head at 0
    let last = *t.writes.last().expect("writes");
    assert_eq!(last, (0, HEAD));
    // before that, offset 0 was written only by the wipe (zeros)
    let zero_writes = t.writes.iter().filter(|w| w.0 == 0).count();
    assert_eq!(zero_writes, 2, "{:?}", t.writes);
}

#[test]
fn a_tampered_first_chunk_writes_nothing() {
    let img = image(4 * MIB);
    let mut t = Fake::new(8 * MIB, 0xee);
    let mut bl = blocks(&img, 1 << 20);
    bl[0] = Err(ImageError::Release(
        "disk chunk 0: SHA-256 is x, the manifest says y".into(),
    ));
    let no = AtomicBool::new(false);
    let e = run(&mut t, bl, img.len() as u64, &no, &mut |_, _| Ok(())).expect_err("tampered");
    assert!(matches!(e, WriteError::Refused(_)), "{e}");
    assert!(e.to_string().contains("nothing was written"), "{e}");
    assert!(t.writes.is_empty());
    assert!(t.disk.iter().all(|b| *b == 0xee));
}

#[test]
fn a_tampered_later_chunk_stops_before_it_and_wipes_the_table() {
    let img = image(6 * MIB);
    let mut t = Fake::new(8 * MIB, 0xee);
    let mut bl = blocks(&img, 1 << 20);
    bl[3] = Err(ImageError::Release(
        "disk chunk 3: SHA-256 is x, the manifest says y".into(),
    ));
    let no = AtomicBool::new(false);
    let e = run(&mut t, bl, img.len() as u64, &no, &mut |_, _| Ok(())).expect_err("tampered");
    let m = e.to_string();
    assert!(
        m.contains("chunk 3") && m.contains("partition table was wiped"),
        "{m}"
    );
    // verified chunks 1 and 2 were written, nothing at or past chunk 3 but wipe zeros
    assert_eq!(
        &t.disk[MIB as usize..3 * MIB as usize],
        &img[MIB as usize..3 * MIB as usize]
    );
    assert!(t.disk[3 * MIB as usize..4 * MIB as usize]
        .iter()
        .all(|b| *b == 0xee));
    assert!(t.disk[..HEAD as usize].iter().all(|b| *b == 0));
    assert!(t.disk[(5 * MIB) as usize..(6 * MIB) as usize]
        .iter()
        .all(|b| *b == 0));
    assert!(t.disk[(7 * MIB) as usize..].iter().all(|b| *b == 0));
}

#[test]
fn an_io_error_midway_wipes_the_table() {
    let img = image(6 * MIB);
    let mut t = Fake::new(8 * MIB, 0xee);
    t.fail_at = Some(4 * MIB);
    let no = AtomicBool::new(false);
    let e = run(
        &mut t,
        blocks(&img, 1 << 20),
        img.len() as u64,
        &no,
        &mut |_, _| Ok(()),
    )
    .expect_err("io");
    let m = e.to_string();
    assert!(
        m.contains("injected I/O error") && m.contains("wiped"),
        "{m}"
    );
    assert!(t.disk[..HEAD as usize].iter().all(|b| *b == 0));
}

#[test]
fn a_read_back_mismatch_fails_and_wipes() {
    let img = image(6 * MIB);
    let mut t = Fake::new(6 * MIB, 0xee);
    t.corrupt_read = Some(5 * MIB + 17);
    let no = AtomicBool::new(false);
    let e = run(
        &mut t,
        blocks(&img, 1 << 20),
        img.len() as u64,
        &no,
        &mut |_, _| Ok(()),
    )
    .expect_err("mismatch");
    let m = e.to_string();
    assert!(
        m.contains("reads back differently at bytes 5242880..6291456"),
        "{m}"
    );
    assert!(t.disk[..HEAD as usize].iter().all(|b| *b == 0));
}

#[test]
fn interruption_before_and_after_the_first_write() {
    let img = image(4 * MIB);
    let mut t = Fake::new(4 * MIB, 0xee);
    let yes = AtomicBool::new(true);
    let e = run(
        &mut t,
        blocks(&img, 1 << 20),
        img.len() as u64,
        &yes,
        &mut |_, _| Ok(()),
    )
    .expect_err("early");
    assert!(matches!(e, WriteError::InterruptedEarly));
    assert!(t.writes.is_empty());

    // Interrupted while placing the config: after the data, before the table.
    let cancel = AtomicBool::new(false);
    let mut before = |_: &[u8], _: &mut dyn Target| {
        cancel.store(true, Ordering::SeqCst);
        Ok(())
    };
    let mut t = Fake::new(4 * MIB, 0xee);
    let e = run(
        &mut t,
        blocks(&img, 1 << 20),
        img.len() as u64,
        &cancel,
        &mut before,
    )
    .expect_err("late");
    assert!(e.to_string().starts_with("interrupted;"), "{e}");
    assert!(t.disk[..HEAD as usize].iter().all(|b| *b == 0));
}

#[test]
fn a_failed_placement_leaves_no_table() {
    let img = image(4 * MIB);
    let mut t = Fake::new(4 * MIB, 0xee);
    let no = AtomicBool::new(false);
    let e = run(
        &mut t,
        blocks(&img, 1 << 20),
        img.len() as u64,
        &no,
        &mut |_, _| Err("mounting the new OEM partition: nope".into()),
    )
    .expect_err("placement");
    assert!(e.to_string().contains("nope"), "{e}");
    assert!(t.disk[..HEAD as usize].iter().all(|b| *b == 0));
}

#[test]
fn a_short_image_is_an_error() {
    let img = image(4 * MIB);
    let mut t = Fake::new(8 * MIB, 0xee);
    let no = AtomicBool::new(false);
    let mut bl = blocks(&img, 1 << 20);
    bl.pop();
    let e = run(&mut t, bl, img.len() as u64, &no, &mut |_, _| Ok(())).expect_err("short");
    assert!(
        e.to_string().contains("ended after 3145728 of 4194304"),
        "{e}"
    );
}

/// Zero blocks become holes in an image file: the file reads back the
/// same, and its data blocks are only those of the non-zero data (the VM
/// test installs a 2.9 GiB image into a file; written out, it filled a
/// CI machine's disk).
#[test]
fn zero_blocks_leave_holes_in_an_image_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let mib = 1usize << 20;
    std::fs::write(&path, vec![7u8; 8 * mib]).unwrap();
    let mut t = crate::FileTarget::open(&path, crate::device::Kind::File).unwrap();
    let zeros = vec![0u8; 4 * mib];
    t.write_zeros(2 * mib as u64, 4 * mib as u64, &zeros)
        .unwrap();
    t.sync().unwrap();
    let mut back = vec![1u8; 8 * mib];
    t.read_at(0, &mut back).unwrap();
    assert!(back[..2 * mib].iter().all(|b| *b == 7));
    assert!(back[2 * mib..6 * mib].iter().all(|b| *b == 0));
    assert!(back[6 * mib..].iter().all(|b| *b == 7));
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated <= 4 * mib as u64 + 64 * 1024,
        "{allocated} bytes allocated, 4 MiB of data"
    );
}
