//! MIME multipart user data (RFC 2046), as cloud-init's
//! `write-mime-multipart` and cloud consoles produce it. Keel accepts it
//! when every part is a cloud-config (`text/cloud-config`, or a part whose
//! body starts with `#cloud-config`): the parts are merged in order, a
//! later part over an earlier one (see [`crate::model::Config::merged_over`]).
//! A script, boothook, include or any other part is refused, naming the
//! part: Keel runs no user scripts at first boot.

use crate::model::Config;
use crate::ConfigError;

/// Most parts read from one message.
const MAX_PARTS: usize = 64;

/// True when the data starts with MIME headers announcing a multipart body.
pub fn looks_like(data: &[u8]) -> bool {
    let head = &data[..data.len().min(4096)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    (text.starts_with("content-type:") || text.starts_with("mime-version:"))
        && text.contains("multipart/")
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// Split header lines (with continuation lines) from a body.
fn headers(text: &str) -> (Vec<(String, String)>, &str) {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    loop {
        let (line, next) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            return (out, next);
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        } else {
            // not a header: the body starts here
            return (out, rest);
        }
        if next.is_empty() {
            return (out, "");
        }
        rest = next;
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A parameter of a header value: `boundary="abc"`.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case(name) {
            Some(v.trim().trim_matches('"').to_string())
        } else {
            None
        }
    })
}

/// Parse a multipart message of cloud-configs. Returns the merged config
/// and the number of parts.
pub fn parse(data: &[u8]) -> Result<(Config, usize), ConfigError> {
    let text = std::str::from_utf8(data).map_err(|e| {
        err(
            format!("byte {}", e.valid_up_to()),
            "MIME user data is not UTF-8",
        )
    })?;
    let (h, body) = headers(text);
    let ctype = header(&h, "content-type").unwrap_or("");
    if !ctype.to_ascii_lowercase().starts_with("multipart/") {
        return Err(err(
            "MIME headers",
            format!("not multipart (Content-Type: {ctype})"),
        ));
    }
    let boundary = param(ctype, "boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            err(
                "MIME headers",
                "MIME multipart user data without a boundary",
            )
        })?;
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut chunks = body.split(delim.as_str());
    // the preamble before the first delimiter
    chunks.next();
    for chunk in chunks {
        if chunk.starts_with("--") {
            break;
        }
        if parts.len() == MAX_PARTS {
            return Err(err("MIME", format!("more than {MAX_PARTS} parts")));
        }
        let chunk = chunk
            .strip_prefix("\r\n")
            .or_else(|| chunk.strip_prefix('\n'))
            .unwrap_or(chunk);
        parts.push(chunk);
    }
    if parts.is_empty() {
        return Err(err("MIME", "MIME multipart user data has no parts"));
    }
    let mut merged = Config::default();
    for (i, part) in parts.iter().enumerate() {
        let (ph, pbody) = headers(part);
        // the CRLF before the next delimiter belongs to the delimiter
        let pbody = pbody
            .strip_suffix("\r\n")
            .or_else(|| pbody.strip_suffix('\n'))
            .unwrap_or(pbody);
        let ptype = header(&ph, "content-type").unwrap_or("text/plain");
        let name = param(header(&ph, "content-disposition").unwrap_or(""), "filename")
            .or_else(|| param(ptype, "name"));
        let label = match &name {
            Some(n) => format!("MIME part {} ({n}, {})", i + 1, bare(ptype)),
            None => format!("MIME part {} ({})", i + 1, bare(ptype)),
        };
        let bytes = match header(&ph, "content-transfer-encoding")
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("7bit" | "8bit" | "binary") => pbody.as_bytes().to_vec(),
            Some("base64") => crate::dataurl::base64(
                &pbody
                    .bytes()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| err(&label, format!("base64: {e}")))?,
            Some(other) => {
                return Err(err(
                    &label,
                    format!("Content-Transfer-Encoding {other:?} is not supported by keel"),
                ))
            }
        };
        let t = bare(ptype).to_ascii_lowercase();
        let is_cc = t == "text/cloud-config"
            || (t == "text/plain" && bytes.starts_with(crate::cloudconfig::HEADER.as_bytes()));
        if !is_cc {
            let why = match t.as_str() {
                "text/x-shellscript"
                | "text/x-shellscript-per-boot"
                | "text/x-shellscript-per-instance"
                | "text/x-shellscript-per-once" => {
                    "is a script: keel runs no user scripts at first boot (use a systemd unit)"
                }
                "text/cloud-boothook" => "is a boothook: keel runs no user scripts at first boot",
                "text/x-include-url" | "text/x-include-once-url" => {
                    "is an include: keel does not fetch user data"
                }
                _ => "is not a cloud-config (keel accepts multipart user data of cloud-configs)",
            };
            return Err(err(label, why));
        }
        let mut text = bytes;
        if !text.starts_with(crate::cloudconfig::HEADER.as_bytes()) {
            // text/cloud-config parts need not repeat the header line
            let mut t = format!("{}\n", crate::cloudconfig::HEADER).into_bytes();
            t.extend_from_slice(&text);
            text = t;
        }
        let mut cfg = crate::cloudconfig::parse(&text).map_err(|e| ConfigError {
            path: format!("{label}: {}", e.path),
            message: e.message,
        })?;
        cfg.set_source(&label);
        merged = cfg.merged_over(merged);
    }
    Ok((merged, parts.len()))
}

fn bare(ctype: &str) -> &str {
    ctype.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "Content-Type: multipart/mixed; boundary=\"XX\"\r\nMIME-Version: 1.0\r\n\r\n\
--XX\r\nContent-Type: text/cloud-config; charset=\"us-ascii\"\r\nContent-Disposition: attachment; filename=\"a.yaml\"\r\n\r\n\
#cloud-config\r\nhostname: first\r\nssh_authorized_keys:\r\n  - ssh-ed25519 AAAA a\r\n\r\n\
--XX\r\nContent-Type: text/cloud-config\r\nContent-Transfer-Encoding: base64\r\n\r\n\
I2Nsb3VkLWNvbmZpZwpob3N0bmFtZTogc2Vjb25kCg==\r\n--XX--\r\n";

    #[test]
    fn cloud_config_parts_merge_in_order() {
        assert!(looks_like(TWO.as_bytes()));
        let (cfg, n) = parse(TWO.as_bytes()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(cfg.files.len(), 1);
        assert_eq!(cfg.files[0].contents.as_deref(), Some(&b"second\n"[..]));
        assert_eq!(cfg.users[0].ssh_authorized_keys, vec!["ssh-ed25519 AAAA a"]);
    }

    #[test]
    fn script_parts_are_named() {
        let m = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: a\n--b\nContent-Type: text/x-shellscript\nContent-Disposition: attachment; filename=\"run.sh\"\n\n#!/bin/sh\necho hi\n--b--\n";
        assert_eq!(
            parse(m.as_bytes()).unwrap_err().to_string(),
            "MIME part 2 (run.sh, text/x-shellscript): is a script: keel runs no user scripts at first boot (use a systemd unit)"
        );
        assert!(parse(b"Content-Type: multipart/mixed\n\n").is_err());
    }
}
