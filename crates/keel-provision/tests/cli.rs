//! The `keel-provision` binary: exit status and messages of `validate`,
//! `apply` into a temp root, then `show` on it.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keel-provision"))
}

#[test]
fn validate_exit_status_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.ign");
    std::fs::write(&good, r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,x"}}]}}"#).unwrap();
    let out = bin().arg("validate").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok (ignition 3.4.0)\n", good.display())
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "#cloud-config\nwrite_files:\n  - path: etc/x\n").unwrap();
    let out = bin().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}: write_files[0].path: path \"etc/x\" is not absolute\n",
            bad.display()
        )
    );

    let out = bin()
        .arg("validate")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reading "),
        "{out:?}"
    );
}

#[test]
fn apply_then_show() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "#cloud-config\nhostname: shown\nwrite_files:\n  - path: /etc/motd\n    content: hi\n",
    )
    .unwrap();
    let out = bin().arg("show").arg("--root").arg(&root).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "not provisioned (no /etc/.keel-provision-result.json)\n"
    );
    if !rustix::process::geteuid().is_root() {
        // `apply` uses the real chown(2): files are owned by root
        eprintln!("apply_then_show: apply part skipped, needs root");
        return;
    }
    let out = bin()
        .args(["apply", "--sysroot"])
        .arg(&root)
        .arg("--run")
        .arg(dir.path().join("run"))
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "shown\n"
    );
    let out = bin().arg("show").arg("--root").arg(&root).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("format:      cloud-config\n"), "{text}");
    assert!(
        text.contains("files:\n  /etc/hostname\n  /etc/motd\n"),
        "{text}"
    );
}

/// `translate` prints the Ignition JSON a Butane file means; `local:`
/// reads from `--files-dir` and is refused without it; `validate --usr`
/// plans against an image tree and refuses what its boot would.
#[test]
fn translate_files_dir_and_validate_against_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let bu = dir.path().join("c.bu");
    std::fs::write(
        &bu,
        "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /etc/app.conf\n      mode: 0600\n      contents:\n        local: app.conf\n",
    )
    .unwrap();
    let out = bin().arg("translate").arg(&bu).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "storage.files[0].contents.local (line 8): local contents refer to files beside the config, and there is no files directory here"
        ),
        "{out:?}"
    );
    std::fs::write(dir.path().join("app.conf"), "a = 1\n").unwrap();
    let out = bin()
        .arg("translate")
        .arg("--files-dir")
        .arg(dir.path())
        .arg(&bu)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ignition"]["version"], "3.4.0");
    assert_eq!(v["storage"]["files"][0]["mode"], 0o600);
    assert_eq!(
        v["storage"]["files"][0]["contents"]["source"],
        "data:,a%20=%201%0A"
    );

    // an image /usr with a factory /etc and one template unit
    let usr = dir.path().join("usr");
    std::fs::create_dir_all(usr.join("share/keel/factory/etc")).unwrap();
    std::fs::create_dir_all(usr.join("lib/systemd/system")).unwrap();
    std::fs::write(
        usr.join("lib/systemd/system/t@.service"),
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let ign = dir.path().join("c.ign");
    std::fs::write(
        &ign,
        r#"{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"t@a.service","enabled":true},{"name":"u@a.service","enabled":true}]}}"#,
    )
    .unwrap();
    let out = bin()
        .arg("validate")
        .arg("--usr")
        .arg(&usr)
        .arg(&ign)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{}: $.systemd.units.1: unit u@a.service has no contents in the config and no file in /etc/systemd/system or /usr/lib/systemd/system\n", ign.display())
    );
    let out = bin()
        .arg("validate")
        .arg("--usr")
        .arg(dir.path())
        .arg(&ign)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a Keel image's /usr"));
}
