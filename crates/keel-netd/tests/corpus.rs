//! The conformance corpus (unit tier): every case under `tests/corpus/`
//! is checked as `keel-netd check` would over the case's directories, and
//! the report must equal the case's `expected` verdict. See
//! `tests/corpus/README.md`.

use std::path::{Path, PathBuf};

use keel_netd::config::check::check;
use keel_netd::config::cond::HostFacts;
use keel_netd::config::load::DEFAULT_DIRS;

fn host() -> HostFacts {
    HostFacts {
        cmdline: "console=ttyS0 keel.first_boot=1".into(),
        virtualization: Some("kvm".into()),
        container: false,
        hostname: "node1".into(),
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        architecture: "x86-64".into(),
    }
}

#[cfg(test)]
fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn verdict(case: &Path) -> String {
    let dirs: Vec<PathBuf> = DEFAULT_DIRS
        .iter()
        .map(|d| case.join(d.trim_start_matches('/')))
        .collect();
    let r = check(&dirs, &host());
    let mut text = r.text.replace(&case.display().to_string(), "");
    text.push_str(if r.ok {
        "verdict: accepted\n"
    } else {
        "verdict: refused\n"
    });
    text
}

#[test]
fn corpus_verdicts() {
    let cases = cases();
    assert!(cases.len() >= 15, "found {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = verdict(case);
        let p = case.join("expected");
        if std::env::var_os("UPDATE_EXPECTED").is_some() {
            std::fs::write(&p, &got).unwrap();
        }
        let want = std::fs::read_to_string(&p).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "--- {}\nwant:\n{want}\ngot:\n{got}",
                case.display()
            ));
        }
        // A case meant for the privileged tier must be accepted.
        if case.join("privileged").exists() {
            assert!(
                got.ends_with("verdict: accepted\n"),
                "{}: {got}",
                case.display()
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
