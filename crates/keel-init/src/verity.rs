//! dm-verity: the on-disk superblock veritysetup writes, and the kernel table.
//!
//! The superblock sits in the first block of the hash partition and is not
//! itself trusted: every parameter it gives (salt, sizes, algorithm) feeds the
//! hash tree whose root must equal the root hash from the kernel command line,
//! so a forged superblock only makes verification fail.

use thiserror::Error;

/// Size of the superblock veritysetup writes.
pub const SUPERBLOCK_SIZE: usize = 512;

/// A superblock that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SuperblockError {
    /// Missing "verity" signature.
    #[error("{device}: no dm-verity superblock (signature at byte 0 is not \"verity\")")]
    Signature { device: String },
    /// A field out of range.
    #[error("{device}: dm-verity superblock field {field} at byte {offset}: {message}")]
    Field {
        device: String,
        field: &'static str,
        offset: usize,
        message: String,
    },
}

/// The parameters of a verity hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Hash format type (1 = normal).
    pub hash_type: u32,
    /// Hash algorithm name, e.g. "sha256".
    pub algorithm: String,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Number of data blocks covered.
    pub data_blocks: u64,
    /// Salt.
    pub salt: Vec<u8>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Superblock {
    /// Parse the first 512 bytes of a hash device named `device`.
    pub fn parse(device: &str, b: &[u8]) -> Result<Self, SuperblockError> {
        let field = |field, offset, message: String| SuperblockError::Field {
            device: device.into(),
            field,
            offset,
            message,
        };
        if b.len() < SUPERBLOCK_SIZE {
            return Err(field("length", 0, format!("only {} bytes", b.len())));
        }
        if &b[0..8] != b"verity\0\0" {
            return Err(SuperblockError::Signature {
                device: device.into(),
            });
        }
        let version = u32_at(b, 8);
        if version != 1 {
            return Err(field(
                "version",
                8,
                format!("{version} is not supported (1)"),
            ));
        }
        let hash_type = u32_at(b, 12);
        if hash_type > 1 {
            return Err(field("hash_type", 12, format!("{hash_type} is not 0 or 1")));
        }
        let alg_raw = &b[32..64];
        let alg_len = alg_raw.iter().position(|c| *c == 0).unwrap_or(32);
        let algorithm = &alg_raw[..alg_len];
        if algorithm.is_empty()
            || !algorithm
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Err(field("algorithm", 32, "not a hash algorithm name".into()));
        }
        let bs = |o: usize, name| {
            let v = u32_at(b, o);
            if v.is_power_of_two() && (512..=1 << 20).contains(&v) {
                Ok(v)
            } else {
                Err(field(
                    name,
                    o,
                    format!("{v} is not a power of two in 512..=1048576"),
                ))
            }
        };
        let data_block_size = bs(64, "data_block_size")?;
        let hash_block_size = bs(68, "hash_block_size")?;
        let data_blocks = u64::from_le_bytes(b[72..80].try_into().unwrap_or([0; 8]));
        if data_blocks == 0 {
            return Err(field("data_blocks", 72, "is zero".into()));
        }
        let salt_size = usize::from(u16::from_le_bytes([b[80], b[81]]));
        if salt_size > 256 {
            return Err(field(
                "salt_size",
                80,
                format!("{salt_size} is more than 256"),
            ));
        }
        Ok(Superblock {
            hash_type,
            algorithm: String::from_utf8_lossy(algorithm).into_owned(),
            data_block_size,
            hash_block_size,
            data_blocks,
            salt: b[88..88 + salt_size].to_vec(),
        })
    }

    /// Bytes of data the tree covers.
    pub fn data_bytes(&self) -> u64 {
        self.data_blocks
            .saturating_mul(u64::from(self.data_block_size))
    }

    /// The device-mapper table line for a verity target over `data_dev` and
    /// `hash_dev` ("MAJOR:MINOR"), the hash tree starting after the
    /// superblock. Returns (length in 512-byte sectors, parameters).
    pub fn table(&self, data_dev: &str, hash_dev: &str, root_hash: &str) -> (u64, String) {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&self.salt)
        };
        // veritysetup puts the superblock in its own hash block.
        let hash_start = (SUPERBLOCK_SIZE as u64).div_ceil(u64::from(self.hash_block_size));
        (
            self.data_bytes() / 512,
            format!(
                "{} {} {} {} {} {} {} {} {} {}",
                self.hash_type,
                data_dev,
                hash_dev,
                self.data_block_size,
                self.hash_block_size,
                self.data_blocks,
                hash_start,
                self.algorithm,
                root_hash,
                salt
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..8].copy_from_slice(b"verity\0\0");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&4096u32.to_le_bytes());
        b[68..72].copy_from_slice(&4096u32.to_le_bytes());
        b[72..80].copy_from_slice(&1000u64.to_le_bytes());
        b[80..82].copy_from_slice(&2u16.to_le_bytes());
        b[88] = 0xab;
        b[89] = 0xcd;
        b
    }

    #[test]
    fn parses_and_renders_table() {
        let sb = Superblock::parse("/dev/vda3", &sample()).unwrap();
        assert_eq!(sb.algorithm, "sha256");
        assert_eq!(sb.salt, vec![0xab, 0xcd]);
        let (len, params) = sb.table("254:2", "254:3", "ff");
        assert_eq!(len, 1000 * 8);
        assert_eq!(params, "1 254:2 254:3 4096 4096 1000 1 sha256 ff abcd");
    }

    #[test]
    fn bad_superblocks_named() {
        type Corrupt = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Corrupt, &str)> = vec![
            (Box::new(|b| b[0] = b'x'), "/dev/vda3: no dm-verity superblock (signature at byte 0 is not \"verity\")"),
            (Box::new(|b| b[8] = 2), "/dev/vda3: dm-verity superblock field version at byte 8: 2 is not supported (1)"),
            (Box::new(|b| b[64..68].copy_from_slice(&4095u32.to_le_bytes())), "/dev/vda3: dm-verity superblock field data_block_size at byte 64: 4095 is not a power of two in 512..=1048576"),
            (Box::new(|b| b[72..80].fill(0)), "/dev/vda3: dm-verity superblock field data_blocks at byte 72: is zero"),
            (Box::new(|b| b[80..82].copy_from_slice(&300u16.to_le_bytes())), "/dev/vda3: dm-verity superblock field salt_size at byte 80: 300 is more than 256"),
            (Box::new(|b| b[32] = b' '), "/dev/vda3: dm-verity superblock field algorithm at byte 32: not a hash algorithm name"),
        ];
        for (f, want) in cases {
            let mut b = sample();
            f(&mut b);
            assert_eq!(
                Superblock::parse("/dev/vda3", &b).unwrap_err().to_string(),
                want
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Superblock::parse("x", &data);
        }
    }
}
