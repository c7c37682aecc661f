//! `data:` URLs (RFC 2397), as Ignition's `contents.source` and the kernel
//! command line carry them: `data:[<mediatype>][;base64],<data>`.
//!
//! The percent-decoding is written here rather than taken from the
//! `percent-encoding` crate because that crate passes malformed escapes
//! (`%zz`, a trailing `%`) through unchanged, and a config with a broken
//! escape must be rejected with the offset of the escape, not half-decoded.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Why a `data:` URL could not be decoded. Offsets count bytes from the
/// start of the whole URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataUrlError {
    /// The URL does not start with `data:`.
    #[error("not a data: URL")]
    NotData,
    /// There is no `,` between the header and the data.
    #[error("data: URL has no ',' before its data")]
    NoComma,
    /// A `%` is not followed by two hex digits.
    #[error("invalid percent-escape at offset {0}")]
    BadEscape(usize),
    /// The payload is not valid base64.
    #[error("invalid base64 at offset {offset}: {reason}")]
    BadBase64 {
        /// Offset in the URL of the offending byte (or of the data's end).
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

/// Base64 as found in real configs: the standard alphabet, padding optional
/// (some generators strip it), but trailing bits must be zero.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decode a `data:` URL into its bytes.
pub fn decode(url: &str) -> Result<Vec<u8>, DataUrlError> {
    let prefix = url.get(..5).ok_or(DataUrlError::NotData)?;
    if !prefix.eq_ignore_ascii_case("data:") {
        return Err(DataUrlError::NotData);
    }
    let rest = &url[5..];
    let comma = rest.find(',').ok_or(DataUrlError::NoComma)?;
    let header = &rest[..comma];
    let body_offset = 5 + comma + 1;
    let body = &rest[comma + 1..];
    let is_base64 = header
        .rsplit(';')
        .next()
        .is_some_and(|p| header.contains(';') && p.trim().eq_ignore_ascii_case("base64"));
    let (bytes, map) = percent_decode(body, body_offset)?;
    if !is_base64 {
        return Ok(bytes);
    }
    base64_mapped(&bytes, &map, body_offset + body.len())
}

/// Decode base64 text (standard alphabet, padding optional, whitespace
/// ignored), as cloud-config's `encoding: b64` carries it. Offsets in errors
/// count bytes of `text`.
pub fn base64(text: &[u8]) -> Result<Vec<u8>, DataUrlError> {
    let map: Vec<usize> = (0..text.len()).collect();
    base64_mapped(text, &map, text.len())
}

/// Base64-decode `bytes`, where `map[i]` is the offset to report for byte `i`
/// and `end` the offset of the end of the data.
fn base64_mapped(bytes: &[u8], map: &[usize], end: usize) -> Result<Vec<u8>, DataUrlError> {
    // Base64 payloads may be split over lines by some generators.
    let (clean, clean_map): (Vec<u8>, Vec<usize>) = bytes
        .iter()
        .zip(map.iter())
        .filter(|(b, _)| !b.is_ascii_whitespace())
        .map(|(b, o)| (*b, *o))
        .unzip();
    B64.decode(&clean).map_err(|e| {
        let at = |i: usize| clean_map.get(i).copied().unwrap_or(end);
        let (offset, reason) = match e {
            base64::DecodeError::InvalidByte(i, b) => {
                (at(i), format!("invalid byte {:?}", b as char))
            }
            base64::DecodeError::InvalidLastSymbol(i, b) => {
                (at(i), format!("invalid last symbol {:?}", b as char))
            }
            base64::DecodeError::InvalidLength(_) => (end, "truncated data".to_string()),
            base64::DecodeError::InvalidPadding => (end, "invalid padding".to_string()),
        };
        DataUrlError::BadBase64 { offset, reason }
    })
}

/// Percent-decode `s`, returning the bytes and, for each output byte, the
/// offset in the URL it came from (for error messages).
fn percent_decode(s: &str, base: usize) -> Result<(Vec<u8>, Vec<usize>), DataUrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut map = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .ok_or(DataUrlError::BadEscape(base + i))?;
            let hi = hex_val(hex[0]).ok_or(DataUrlError::BadEscape(base + i))?;
            let lo = hex_val(hex[1]).ok_or(DataUrlError::BadEscape(base + i))?;
            out.push(hi << 4 | lo);
            map.push(base + i);
            i += 3;
        } else {
            out.push(b[i]);
            map.push(base + i);
            i += 1;
        }
    }
    Ok((out, map))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_plain_and_base64() {
        assert_eq!(decode("data:,hello%20world").unwrap(), b"hello world");
        assert_eq!(
            decode("data:text/plain;charset=utf-8,a%0Ab").unwrap(),
            b"a\nb"
        );
        assert_eq!(decode("data:;base64,aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode("DATA:text/plain;BASE64,aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode("data:;base64,aGVs%0AbG8=").unwrap(), b"hello");
        assert_eq!(decode("data:,").unwrap(), b"");
        // "base64" only counts as the last parameter, not as a media type
        assert_eq!(decode("data:base64,aGk=").unwrap(), b"aGk=");
    }

    #[test]
    fn negative_fixtures() {
        let table: &[(&str, &str)] = &[
            ("http://x/y", "not a data: URL"),
            ("dat", "not a data: URL"),
            ("data:text/plain", "data: URL has no ',' before its data"),
            ("data:,abc%2", "invalid percent-escape at offset 9"),
            ("data:,abc%zz", "invalid percent-escape at offset 9"),
            (
                "data:;base64,aGVs!G8=",
                "invalid base64 at offset 17: invalid byte '!'",
            ),
            (
                "data:;base64,aGVsb",
                "invalid base64 at offset 18: truncated data",
            ),
            (
                "data:;base64,aGk==",
                "invalid base64 at offset 16: invalid byte '='",
            ),
            (
                "data:;base64,aGl=",
                "invalid base64 at offset 15: invalid last symbol 'l'",
            ),
        ];
        let mut bad = Vec::new();
        for (input, want) in table {
            let got = decode(input).expect_err(input).to_string();
            if &got != want {
                bad.push(format!("input {input:?}\n  got:  {got}\n  want: {want}"));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".*") {
            let _ = decode(&s);
            let _ = decode(&format!("data:;base64,{s}"));
            let _ = decode(&format!("data:,{s}"));
        }

        #[test]
        fn base64_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let url = format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(&data));
            prop_assert_eq!(decode(&url).unwrap(), data);
        }
    }
}
