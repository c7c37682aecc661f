//! OCI image index / manifest / config documents (and their Docker v2
//! equivalents), parsed strictly enough to refuse garbage with a clear error.
//!
//! Hand-written serde types rather than `oci-spec`: toolbox needs a dozen
//! fields, and the smaller binary matters on a read-only `/usr`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::reference::Digest;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest v2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The `Accept` header for manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or config toolbox reads (real ones are a few KiB).
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// Errors about image documents; `what` names the document (its source and
/// digest or file).
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// JSON did not parse or lacks required fields.
    #[error("{what}: not a valid {kind}: {source}")]
    Json {
        /// Document name.
        what: String,
        /// Expected kind.
        kind: &'static str,
        /// serde error (names line and column).
        source: serde_json::Error,
    },
    /// Unsupported schema or media type.
    #[error("{what}: unsupported {field} {value:?}")]
    Unsupported {
        /// Document name.
        what: String,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// Index without a linux/amd64 entry.
    #[error("{what}: no linux/amd64 image in the index (it has: {available})")]
    NoPlatform {
        /// Document name.
        what: String,
        /// The platforms it has.
        available: String,
    },
    /// Index without a matching reference name.
    #[error("{what}: no image named {tag:?} in the index (it has: {available})")]
    NoRef {
        /// Document name.
        what: String,
        /// Wanted name.
        tag: String,
        /// Names found.
        available: String,
    },
    /// Digest mismatch.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    Digest {
        /// Document name.
        what: String,
        /// Expected digest.
        expected: Digest,
        /// Computed digest.
        actual: Digest,
    },
    /// Size mismatch.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    Size {
        /// Document name.
        what: String,
        /// From the descriptor.
        expected: u64,
        /// Read.
        actual: u64,
    },
    /// Config and manifest disagree.
    #[error(
        "{what}: the config lists {diff_ids} layer digests but the manifest has {layers} layers"
    )]
    LayerCount {
        /// Document name.
        what: String,
        /// Count in config.
        diff_ids: usize,
        /// Count in manifest.
        layers: usize,
    },
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Content digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (indexes only).
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A platform in an index.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// Variant.
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Must be 2.
    pub schema_version: u32,
    /// Optional media type.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Entries.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Must be 2.
    pub schema_version: u32,
    /// Optional media type.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// The parts of the image config toolbox uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    /// Architecture.
    #[serde(default)]
    pub architecture: Option<String>,
    /// OS.
    #[serde(default)]
    pub os: Option<String>,
    /// The uncompressed layer digests.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// One per layer.
    pub diff_ids: Vec<Digest>,
}

/// A manifest document: either an index or an image manifest.
#[derive(Debug, Clone)]
pub enum Document {
    /// Index / manifest list.
    Index(Index),
    /// Image manifest.
    Manifest(Manifest),
}

/// Layer compression, from the media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd (also `zstd:chunked`, whose extra frames are skipped).
    Zstd,
}

/// Compression of a layer media type; other types (foreign, encrypted…) refused.
pub fn layer_compression(what: &str, media_type: &str) -> Result<Compression, OciError> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(OciError::Unsupported {
            what: what.to_string(),
            field: "layer mediaType",
            value: other.to_string(),
        }),
    }
}

/// Parse a manifest-ish document. `content_type` is the HTTP Content-Type
/// when known; the document's own `mediaType` is preferred.
pub fn parse_document(
    what: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Document, OciError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: what.to_string(),
        kind: "manifest",
        source,
    })?;
    if probe.schema_version != Some(2) {
        return Err(OciError::Unsupported {
            what: what.to_string(),
            field: "schemaVersion",
            value: probe
                .schema_version
                .map_or("missing".to_string(), |v| v.to_string()),
        });
    }
    let mt = probe
        .media_type
        .clone()
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()));
    let is_index = match mt.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        // OCI allows omitting mediaType: decide by shape.
        _ => probe.manifests.is_some(),
    };
    if let Some(m) = &probe.media_type {
        if ![OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].contains(&m.as_str()) {
            return Err(OciError::Unsupported {
                what: what.to_string(),
                field: "mediaType",
                value: m.clone(),
            });
        }
    }
    if is_index {
        serde_json::from_slice(bytes)
            .map(Document::Index)
            .map_err(|source| OciError::Json {
                what: what.to_string(),
                kind: "image index",
                source,
            })
    } else {
        serde_json::from_slice(bytes)
            .map(Document::Manifest)
            .map_err(|source| OciError::Json {
                what: what.to_string(),
                kind: "image manifest",
                source,
            })
    }
}

/// Parse an image config.
pub fn parse_config(what: &str, bytes: &[u8]) -> Result<ImageConfig, OciError> {
    let c: ImageConfig = serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: what.to_string(),
        kind: "image config",
        source,
    })?;
    if c.rootfs.kind != "layers" {
        return Err(OciError::Unsupported {
            what: what.to_string(),
            field: "rootfs.type",
            value: c.rootfs.kind,
        });
    }
    Ok(c)
}

/// Pick the linux/amd64 manifest of an index (registry indexes).
pub fn select_platform<'a>(what: &str, index: &'a Index) -> Result<&'a Descriptor, OciError> {
    let found = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            && matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST)
    });
    found.ok_or_else(|| OciError::NoPlatform {
        what: what.to_string(),
        available: index
            .manifests
            .iter()
            .map(|d| {
                d.platform
                    .as_ref()
                    .map_or("unknown".into(), |p| format!("{}/{}", p.os, p.architecture))
            })
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The reference-name annotation of an OCI layout's index entry.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Pick the entry of an OCI layout's `index.json`: the one whose ref name is
/// `tag`; or, when no entry has that name, the only entry.
pub fn select_ref<'a>(what: &str, index: &'a Index, tag: &str) -> Result<&'a Descriptor, OciError> {
    let name = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    if let Some(d) = index
        .manifests
        .iter()
        .find(|d| name(d).as_deref() == Some(tag))
    {
        return Ok(d);
    }
    if index.manifests.len() == 1 {
        return Ok(&index.manifests[0]);
    }
    Err(OciError::NoRef {
        what: what.to_string(),
        tag: tag.to_string(),
        available: index
            .manifests
            .iter()
            .map(|d| name(d).unwrap_or_else(|| d.digest.short().to_string()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Check bytes against a descriptor.
pub fn verify(
    what: &str,
    bytes: &[u8],
    expected: &Digest,
    size: Option<u64>,
) -> Result<(), OciError> {
    if let Some(size) = size {
        if bytes.len() as u64 != size {
            return Err(OciError::Size {
                what: what.to_string(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
    }
    let actual = Digest::of(bytes);
    if &actual != expected {
        return Err(OciError::Digest {
            what: what.to_string(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn index(entries: &[(&str, &str)]) -> String {
        let m: Vec<String> = entries
            .iter()
            .map(|(os, arch)| {
                format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"os":"{os}","architecture":"{arch}"}}}}"#)
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            m.join(",")
        )
    }

    #[test]
    fn selects_linux_amd64() {
        let text = index(&[("linux", "arm64"), ("linux", "amd64")]);
        let Document::Index(i) = parse_document("x", text.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        let d = select_platform("x", &i).unwrap();
        assert_eq!(d.platform.as_ref().unwrap().architecture, "amd64");
        let text = index(&[("linux", "arm64"), ("windows", "amd64")]);
        let Document::Index(i) = parse_document("x", text.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(
            select_platform("reg/x:1", &i).unwrap_err().to_string(),
            "reg/x:1: no linux/amd64 image in the index (it has: linux/arm64, windows/amd64)"
        );
    }

    #[test]
    fn bad_documents() {
        let cases: &[(&str, &str)] = &[
            ("garbage", "m: not a valid manifest: expected value at line 1 column 1"),
            ("{\"schemaVersion\":1}", "m: unsupported schemaVersion \"1\""),
            ("{}", "m: unsupported schemaVersion \"missing\""),
            ("{\"schemaVersion\":2,\"mediaType\":\"text/html\"}", "m: unsupported mediaType \"text/html\""),
            ("{\"schemaVersion\":2,\"layers\":[]}", "m: not a valid image manifest: missing field `config` at line 1 column 31"),
            (
                "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"md5:1\",\"size\":1},\"layers\":[]}",
                "m: not a valid image manifest: invalid digest \"md5:1\" (only sha256:<64 lowercase hex digits> is supported) at line 1 column 61",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_document("m", text.as_bytes(), None)
                    .unwrap_err()
                    .to_string(),
                *want
            );
        }
        assert_eq!(
            layer_compression("l", "application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            layer_compression("l", "application/vnd.oci.image.layer.v1.tar+encrypted")
                .unwrap_err()
                .to_string(),
            "l: unsupported layer mediaType \"application/vnd.oci.image.layer.v1.tar+encrypted\""
        );
        assert_eq!(
            parse_config("c", br#"{"rootfs":{"type":"x","diff_ids":[]}}"#)
                .unwrap_err()
                .to_string(),
            "c: unsupported rootfs.type \"x\""
        );
    }

    #[test]
    fn verify_reports_mismatch() {
        let d = Digest::of(b"abc");
        assert!(verify("b", b"abc", &d, Some(3)).is_ok());
        assert_eq!(
            verify("b", b"abd", &d, None).unwrap_err().to_string(),
            format!(
                "b: digest mismatch: expected {d}, got {}",
                Digest::of(b"abd")
            )
        );
        assert_eq!(
            verify("b", b"abc", &d, Some(4)).unwrap_err().to_string(),
            "b: size mismatch: expected 4 bytes, got 3"
        );
    }

    proptest::proptest! {
        #[test]
        fn documents_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_document("x", &bytes, Some("application/json"));
            let _ = parse_config("x", &bytes);
        }
    }
}
