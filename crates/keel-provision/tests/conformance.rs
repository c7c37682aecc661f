//! The provisioning conformance corpus (`test_data/conformance/`, see its
//! README): each config is validated against the image and applied to a
//! fresh sysroot of that image; both verdicts must agree with each other
//! and with the case's `.expect`, and the files an accepted config asks for
//! must be on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use keel_provision::{butane, sys, Base};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/conformance")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        let t = e.file_type().unwrap();
        if t.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), dest).unwrap();
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The image stand-in: the corpus's `image/usr` plus the repository's own
/// `units/` and sysusers, as keel-image installs them.
pub fn image(dir: &Path) -> PathBuf {
    let usr = dir.join("usr");
    copy_tree(&corpus().join("image/usr"), &usr);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let units = usr.join("lib/systemd/system");
    for e in fs::read_dir(repo.join("units")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), units.join(e.file_name())).unwrap();
        }
    }
    fs::create_dir_all(usr.join("lib/sysusers.d")).unwrap();
    fs::copy(
        repo.join("overlay/lib/sysusers.d/keel.conf"),
        usr.join("lib/sysusers.d/keel.conf"),
    )
    .unwrap();
    usr
}

/// A first boot's sysroot of that image: factory /etc as /etc, /usr, an
/// otherwise empty ROOT.
fn sysroot(usr: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("sysroot");
    copy_tree(usr, &root.join("usr"));
    copy_tree(&usr.join("share/keel/factory/etc"), &root.join("etc"));
    for d in ["var", "home", "root"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    root
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Run one case; returns what did not match. `real` says `system` really
/// changes owners (`owner` lines are checked only then).
pub fn run_case(config: &Path, system: &dyn sys::System, real: bool) -> Vec<String> {
    let name = config.file_name().unwrap().to_string_lossy().to_string();
    let expect_path = config.with_extension("expect");
    let expect = fs::read_to_string(&expect_path)
        .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
    let data = fs::read(config).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let usr = image(tmp.path());
    let root = sysroot(&usr, tmp.path());
    let run = tmp.path().join("run");
    fs::create_dir_all(&run).unwrap();
    let opts = butane::Options::default();
    let mut bad = Vec::new();

    let validated = keel_provision::validate(&data, &name, Base::Image(&usr), &opts);
    let applied = keel_provision::apply_file(&data, &name, &root, &run, system, &opts);
    let v_verdict = validated
        .as_ref()
        .map(|(_, f)| format!("ok {f}"))
        .map_err(|e| format!("error {e}"));
    let a_verdict = applied
        .as_ref()
        .map(|r| format!("ok {}", r.format))
        .map_err(|e| format!("error {e}"));
    if v_verdict != a_verdict {
        bad.push(format!(
            "validate and apply disagree: validate {v_verdict:?}, apply {a_verdict:?}"
        ));
    }
    let plan = validated
        .as_ref()
        .map(|(p, _)| p.render())
        .unwrap_or_default();
    let h = |p: &str| root.join(p.trim_start_matches('/'));
    for line in expect.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (what, rest) = line.split_once(' ').unwrap_or((line, ""));
        match what {
            "ok" | "error" => {
                let got = match &a_verdict {
                    Ok(s) | Err(s) => s.clone(),
                };
                if got != line {
                    bad.push(format!("verdict\n  got:  {got}\n  want: {line}"));
                }
            }
            "plan" => {
                if !plan.lines().any(|l| l == rest) {
                    bad.push(format!("plan has no line {rest:?}; plan:\n{plan}"));
                }
            }
            "file" => {
                let mut parts = rest.splitn(3, ' ');
                let (p, mode, text) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    unescape(parts.next().unwrap_or("")),
                );
                match fs::symlink_metadata(h(p)) {
                    Ok(m) if m.is_file() => {
                        let got_mode = format!("{:04o}", m.permissions().mode() & 0o7777);
                        if got_mode != mode {
                            bad.push(format!("{p}: mode {got_mode}, want {mode}"));
                        }
                        let got = fs::read_to_string(h(p)).unwrap_or_default();
                        if got != text {
                            bad.push(format!("{p}: contents {got:?}, want {text:?}"));
                        }
                    }
                    other => bad.push(format!("{p}: not a regular file ({other:?})")),
                }
            }
            "link" | "runlink" => {
                let (p, target) = rest.split_once(' ').unwrap();
                let host = if what == "link" {
                    h(p)
                } else {
                    run.join(p.trim_start_matches('/'))
                };
                match fs::read_link(&host) {
                    Ok(t) if t == Path::new(target) => {}
                    other => bad.push(format!("{what} {p}: {other:?}, want {target}")),
                }
            }
            "contains" => {
                let (p, text) = rest.split_once(' ').unwrap();
                let text = unescape(text);
                let got = fs::read_to_string(h(p)).unwrap_or_default();
                if !got.contains(&text) {
                    bad.push(format!("{p} does not contain {text:?}: {got:?}"));
                }
            }
            "owner" => {
                use std::os::unix::fs::MetadataExt;
                let (p, want) = rest.split_once(' ').unwrap();
                if real {
                    match fs::symlink_metadata(h(p)) {
                        Ok(m) => {
                            let got = format!("{}:{}", m.uid(), m.gid());
                            if got != want {
                                bad.push(format!("{p}: owner {got}, want {want}"));
                            }
                        }
                        Err(e) => bad.push(format!("{p}: {e}")),
                    }
                }
            }
            "absent" => {
                if fs::symlink_metadata(h(rest)).is_ok() {
                    bad.push(format!("{rest} exists"));
                }
            }
            _ => bad.push(format!("unknown expectation {line:?}")),
        }
    }
    bad
}

/// Every case file in the corpus.
pub fn cases() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(corpus().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "expect"))
        .collect();
    out.sort();
    out
}

#[test]
fn conformance_corpus() {
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 19, "corpus has {} cases", all.len());
    for case in all {
        let fake = sys::Recording::default();
        let bad = run_case(&case, &fake, false);
        if !bad.is_empty() {
            failures.push(format!("{}:\n  {}", case.display(), bad.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
