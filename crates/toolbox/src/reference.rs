//! Image sources: registry references and local transports, in skopeo's
//! spelling (`docker://`, `oci:`, `oci-archive:`, `docker-archive:`).

use std::fmt;
use std::path::PathBuf;

/// A `sha256:` digest, validated (64 lowercase hex digits), so it is safe to
/// use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parse `sha256:<64 hex>`; other algorithms are refused.
    pub fn parse(s: &str) -> Result<Digest, ReferenceError> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            return Err(ReferenceError::Digest(s.to_string()));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::Digest(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    /// From a finished hasher.
    pub fn from_hasher(h: sha2::Sha256) -> Digest {
        use sha2::Digest as _;
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The full `sha256:…` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256:` and the first 12 hex digits, for messages.
    pub fn short(&self) -> &str {
        // Always "sha256:" + 64 hex digits (checked in `parse`/`of`).
        &self.0[..19]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Errors in image references.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Bad digest.
    #[error("invalid digest {0:?} (only sha256:<64 lowercase hex digits> is supported)")]
    Digest(String),
    /// Bad repository.
    #[error("invalid repository name {0:?} (lowercase letters, digits and separators . _ - /)")]
    Repository(String),
    /// Bad registry host.
    #[error("invalid registry host {0:?}")]
    Host(String),
    /// Bad tag.
    #[error("invalid tag {0:?}")]
    Tag(String),
    /// Tag written into the image name.
    #[error("{0:?} contains a tag: put the tag in TOOLBOX_DOCKER_TAG or --tag")]
    TagInImage(String),
    /// Empty path in a local transport.
    #[error("{0:?}: the path must be absolute")]
    Path(String),
    /// Unknown transport.
    #[error("unknown transport in {0:?} (docker://, oci:, oci-archive:, docker-archive:)")]
    Transport(String),
}

/// A registry image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// Host as written (`docker.io` for Docker Hub), with port if any.
    pub host: String,
    /// Repository path, e.g. `library/debian`.
    pub repository: String,
    /// Pinned digest (`name@sha256:…`).
    pub digest: Option<Digest>,
}

impl RegistryRef {
    /// The host to talk to (Docker Hub's API lives elsewhere).
    pub fn api_host(&self) -> &str {
        if self.host == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }

    /// Keel's decision: loopback registries are spoken to in plain HTTP (as
    /// Docker treats 127.0.0.0/8 as insecure by default); everything else uses
    /// HTTPS with the Mozilla roots compiled in.
    pub fn scheme(&self) -> &'static str {
        let h = self
            .host
            .rsplit_once(':')
            .map_or(self.host.as_str(), |(h, p)| {
                if p.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    &self.host
                }
            });
        if h == "localhost" || h.starts_with("127.") || h == "[::1]" {
            "http"
        } else {
            "https"
        }
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A registry, through the distribution API v2.
    Registry(RegistryRef),
    /// An OCI image layout directory (`oci:DIR`).
    OciDir(PathBuf),
    /// A tar of an OCI layout (`oci-archive:FILE`).
    OciArchive(PathBuf),
    /// `docker save` output (`docker-archive:FILE`).
    DockerArchive(PathBuf),
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Registry(r) => {
                write!(f, "{}/{}", r.host, r.repository)?;
                if let Some(d) = &r.digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
            ImageSource::OciDir(p) => write!(f, "oci:{}", p.display()),
            ImageSource::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            ImageSource::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
        }
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    if c.is_empty() {
        return false;
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(t: &str) -> Result<(), ReferenceError> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Tag(t.to_string()))
    }
}

impl ImageSource {
    /// Parse what `TOOLBOX_DOCKER_IMAGE` or `--image` holds.
    pub fn parse(s: &str) -> Result<ImageSource, ReferenceError> {
        let local = |p: &str, f: fn(PathBuf) -> ImageSource| {
            if p.starts_with('/') {
                Ok(f(PathBuf::from(p)))
            } else {
                Err(ReferenceError::Path(s.to_string()))
            }
        };
        if let Some(p) = s.strip_prefix("oci:") {
            return local(p, ImageSource::OciDir);
        }
        if let Some(p) = s.strip_prefix("oci-archive:") {
            return local(p, ImageSource::OciArchive);
        }
        if let Some(p) = s.strip_prefix("docker-archive:") {
            return local(p, ImageSource::DockerArchive);
        }
        let name = s.strip_prefix("docker://").unwrap_or(s);
        if name.contains("://") {
            return Err(ReferenceError::Transport(s.to_string()));
        }
        let (name, digest) = match name.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d)?)),
            None => (name, None),
        };
        let (host, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        if !host_ok {
            return Err(ReferenceError::Host(host));
        }
        if let Some((_, last)) = path.rsplit_once('/').or(Some(("", path.as_str()))) {
            if last.contains(':') {
                return Err(ReferenceError::TagInImage(s.to_string()));
            }
        }
        if path.is_empty() || path.len() > 255 || !path.split('/').all(valid_component) {
            return Err(ReferenceError::Repository(path));
        }
        let repository = if host == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(ImageSource::Registry(RegistryRef {
            host,
            repository,
            digest,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = |s: &str| match ImageSource::parse(s).unwrap() {
            ImageSource::Registry(r) => r,
            other => panic!("{other:?}"),
        };
        let d = r("fedora");
        assert_eq!(
            (d.host.as_str(), d.repository.as_str()),
            ("docker.io", "library/fedora")
        );
        assert_eq!(d.api_host(), "registry-1.docker.io");
        assert_eq!(d.scheme(), "https");
        let q = r("quay.io/fedora/fedora-toolbox");
        assert_eq!(q.repository, "fedora/fedora-toolbox");
        let l = r("docker://127.0.0.1:5000/keel/test");
        assert_eq!(l.host, "127.0.0.1:5000");
        assert_eq!(l.scheme(), "http");
        let p = r(&format!("localhost/a@sha256:{}", "a".repeat(64)));
        assert!(p.digest.is_some());
        assert_eq!(
            ImageSource::parse("oci-archive:/oem/toolbox.tar").unwrap(),
            ImageSource::OciArchive("/oem/toolbox.tar".into())
        );
    }

    #[test]
    fn bad_references() {
        let cases: &[(&str, &str)] = &[
            ("fedora:39", "\"fedora:39\" contains a tag: put the tag in TOOLBOX_DOCKER_TAG or --tag"),
            ("Fedora", "invalid repository name \"Fedora\" (lowercase letters, digits and separators . _ - /)"),
            ("a//b", "invalid repository name \"a//b\" (lowercase letters, digits and separators . _ - /)"),
            ("fedora@sha256:xyz", "invalid digest \"sha256:xyz\" (only sha256:<64 lowercase hex digits> is supported)"),
            ("oci:rel/dir", "\"oci:rel/dir\": the path must be absolute"),
            ("http://x/y", "unknown transport in \"http://x/y\" (docker://, oci:, oci-archive:, docker-archive:)"),
            ("bad_host!.io/x", "invalid registry host \"bad_host!.io\""),
        ];
        for (s, want) in cases {
            assert_eq!(ImageSource::parse(s).unwrap_err().to_string(), *want, "{s}");
        }
        assert!(validate_tag("v1.0_x-y").is_ok());
        assert!(validate_tag(".x").is_err());
    }

    proptest::proptest! {
        #[test]
        fn reference_parse_never_panics(s in "\\PC*") {
            let _ = ImageSource::parse(&s);
            let _ = Digest::parse(&s);
        }
    }
}
