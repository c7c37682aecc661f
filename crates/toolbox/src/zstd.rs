//! zstd layer decoding (OCI `tar+zstd`, and `zstd:chunked` read as plain
//! zstd), pure Rust through `ruzstd` (no C in the static binary).
//!
//! A layer is a sequence of zstd frames: one for `zstd --compress` and
//! skopeo's `--dest-compress-format zstd`, many (one per file, plus
//! skippable frames holding the table of contents) for `zstd:chunked`.
//! [`Decoder`] reads them one after the other and skips skippable frames,
//! so both read as the plain tar stream. What the caller checks is
//! unchanged from gzip: the blob's digest and size as it streams, and the
//! uncompressed stream's diff_id.
//!
//! Memory is bounded: a frame asking for a window larger than
//! [`MAX_WINDOW`] (libzstd's own default limit, 128 MiB) is refused before
//! anything is allocated for it.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The largest window a frame may ask for: libzstd's default
/// `ZSTD_WINDOWLOG_LIMIT_DEFAULT` (2^27), what `zstd -d` accepts without
/// `--long`.
pub const MAX_WINDOW: u64 = 1 << 27;

/// The zstd frame magic, little-endian on the wire.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Reads the concatenated frames of a zstd stream as one decompressed stream.
pub struct Decoder<R: BufRead> {
    src: R,
    dec: FrameDecoder,
    in_frame: bool,
    frames: u64,
}

impl<R: BufRead> std::fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("in_frame", &self.in_frame)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: BufRead> Decoder<R> {
    /// A decoder over `src`; nothing is read yet.
    pub fn new(src: R) -> Self {
        let mut dec = FrameDecoder::new();
        dec.set_max_window_size(MAX_WINDOW);
        Decoder {
            src,
            dec,
            in_frame: false,
            frames: 0,
        }
    }

    /// Start the next frame; `Ok(false)` at the clean end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.src.fill_buf()?.is_empty() {
                if self.frames == 0 {
                    return Err(bad("empty stream (no frame)"));
                }
                return Ok(false);
            }
            match self.dec.reset(&mut self.src) {
                Ok(()) => {
                    self.frames += 1;
                    self.in_frame = true;
                    return Ok(true);
                }
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let want = u64::from(length);
                    let skipped = io::copy(&mut (&mut self.src).take(want), &mut io::sink())?;
                    if skipped != want {
                        return Err(bad("truncated skippable frame"));
                    }
                    // A stream of only skippable frames is not a layer.
                    self.frames += 1;
                }
                Err(FrameDecoderError::WindowSizeTooBig { requested, max }) => {
                    return Err(bad(format!(
                        "frame asks for a {requested}-byte window, more than the {max} bytes allowed"
                    )))
                }
                Err(e) => return Err(bad(e)),
            }
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame && !self.next_frame()? {
                return Ok(0);
            }
            while self.dec.can_collect() == 0 && !self.dec.is_finished() {
                self.dec
                    .decode_blocks(&mut self.src, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(bad)?;
            }
            let n = self.dec.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.dec.is_finished() && self.dec.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    fn decode(b: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decoder::new(b).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn one_frame() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let z = compress_to_vec(&data[..], CompressionLevel::Fastest);
        assert!(z.starts_with(&MAGIC));
        assert_eq!(decode(&z).unwrap(), data);
    }

    #[test]
    fn frames_and_skippable_frames_concatenate() {
        // The shape of zstd:chunked: file frames, then a skippable frame
        // (its table of contents), then more.
        let mut z = compress_to_vec(&b"hello "[..], CompressionLevel::Fastest);
        z.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        z.extend_from_slice(&5u32.to_le_bytes());
        z.extend_from_slice(b"toc..");
        z.extend(compress_to_vec(
            &b"world"[..],
            CompressionLevel::Uncompressed,
        ));
        assert_eq!(decode(&z).unwrap(), b"hello world");
    }

    #[test]
    fn bad_streams_are_errors() {
        let z = compress_to_vec(&b"some text to compress"[..], CompressionLevel::Fastest);
        let cases: &[(&[u8], &str)] = &[
            (b"", "zstd: empty stream (no frame)"),
            (b"\x1f\x8b\x08\x00", "zstd: "),
            (&z[..z.len() - 3], "zstd: "),
            (
                b"\x50\x2a\x4d\x18\x10\x00\x00\x00abc",
                "zstd: truncated skippable frame",
            ),
        ];
        for (input, want) in cases {
            let e = decode(input).unwrap_err();
            assert!(e.to_string().starts_with(want), "{input:?}: {e}");
        }
        // Trailing garbage after a good frame is refused too.
        let mut g = z.clone();
        g.extend_from_slice(b"junk");
        assert!(decode(&g).is_err());
    }

    #[test]
    fn huge_window_is_refused_before_allocating() {
        // Frame header: magic, descriptor 0x00 (window descriptor follows,
        // no checksum, no content size), window descriptor exponent 31-10.
        let mut z = MAGIC.to_vec();
        z.push(0x00);
        z.push((31 - 10) << 3);
        let e = decode(&z).unwrap_err().to_string();
        assert!(e.contains("window"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&b);
            let _ = decode(&b);
            let _ = decode(&with_magic);
        }
    }
}
