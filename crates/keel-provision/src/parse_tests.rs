//! Parser tests: positive cases, the negative-fixture tables with the exact
//! messages, and no-panic property tests over random input.

use proptest::prelude::*;

use crate::model::Owner;
use crate::{cloudconfig, ignition, parse_config, Format};

const FULL_IGN: &str = r#"{
  "ignition": {"version": "3.4.0", "config": {"merge": []}},
  "passwd": {
    "users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA core@x"], "groups": ["docker"]},
              {"name": "alice", "uid": 1500, "passwordHash": "$6$x$y", "homeDir": "/var/home/alice", "shell": "/bin/sh"}],
    "groups": [{"name": "docker", "gid": 233}]
  },
  "storage": {
    "files": [
      {"path": "/etc/motd", "mode": 420, "overwrite": true, "contents": {"source": "data:,hello%0A"}},
      {"path": "/home/core/secret", "mode": 384, "user": {"name": "core"}, "group": {"id": 500},
       "contents": {"source": "data:;base64,H4sIAAAAAAAAA8tIzcnJBwCGphA2BQAAAA==", "compression": "gzip",
                    "verification": {"hash": "sha256-2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}}}
    ],
    "directories": [{"path": "/var/lib/app", "mode": 493}],
    "links": [{"path": "/etc/localtime", "target": "/usr/share/zoneinfo/UTC", "overwrite": true}]
  },
  "systemd": {"units": [
    {"name": "hello.service", "enabled": true, "contents": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"},
    {"name": "sshd.service", "dropins": [{"name": "10-x.conf", "contents": "[Service]\n"}]},
    {"name": "bad.service", "mask": true}
  ]}
}"#;

#[test]
fn ignition_full() {
    let (cfg, v) = ignition::parse(FULL_IGN.as_bytes()).unwrap();
    assert_eq!(v, "3.4.0");
    assert_eq!(cfg.users.len(), 2);
    assert_eq!(
        cfg.users[0].ssh_authorized_keys,
        vec!["ssh-ed25519 AAAA core@x"]
    );
    assert_eq!(cfg.users[1].uid, Some(1500));
    assert_eq!(cfg.groups[0].gid, Some(233));
    assert_eq!(cfg.files[0].contents.as_deref(), Some(&b"hello\n"[..]));
    assert_eq!(cfg.files[0].mode, Some(0o644));
    assert_eq!(cfg.files[1].contents.as_deref(), Some(&b"hello"[..]));
    assert_eq!(cfg.files[1].node.user, Some(Owner::Name("core".into())));
    assert_eq!(cfg.files[1].node.group, Some(Owner::Id(500)));
    assert_eq!(cfg.files[1].node.at, "$.storage.files.1");
    assert_eq!(cfg.directories[0].mode, Some(0o755));
    assert_eq!(cfg.links[0].target, "/usr/share/zoneinfo/UTC");
    assert_eq!(cfg.units[0].enabled, Some(true));
    assert_eq!(cfg.units[1].dropins[0].name, "10-x.conf");
    assert_eq!(cfg.units[2].mask, Some(true));
}

#[test]
fn ignition_all_versions() {
    for v in ignition::VERSIONS {
        let text = format!(r#"{{"ignition":{{"version":"{v}"}}}}"#);
        let (cfg, got) = ignition::parse(text.as_bytes()).unwrap();
        assert_eq!(&got, v);
        assert!(cfg.is_empty());
    }
}

#[test]
fn ignition_negative_fixtures() {
    let h = |body: &str| format!(r#"{{"ignition":{{"version":"3.3.0"}},{body}}}"#);
    let file = |f: &str| h(&format!(r#""storage":{{"files":[{{{f}}}]}}"#));
    let table: Vec<(String, &str)> = vec![
        ("".into(), "line 1 column 0: invalid JSON: EOF while parsing a value"),
        ("{\"ignition\": ".into(), "line 1 column 13: invalid JSON: EOF while parsing a value"),
        ("[]".into(), "$: expected an object, found an array"),
        ("{}".into(), "$.ignition.version: missing: this is not an Ignition config"),
        (r#"{"ignition":{}}"#.into(), "$.ignition.version: missing"),
        (
            r#"{"ignition":{"version":"3.5.0"}}"#.into(),
            "$.ignition.version: unsupported Ignition spec version \"3.5.0\" (keel reads 3.0.0 to 3.4.0)",
        ),
        (
            r#"{"ignition":{"version":"2.2.0"}}"#.into(),
            "$.ignition.version: unsupported Ignition spec version \"2.2.0\" (keel reads 3.0.0 to 3.4.0)",
        ),
        (r#"{"ignition":{"version":3}}"#.into(), "$.ignition.version: expected a string, found a number"),
        (
            r#"{"ignition":{"version":"3.0.0","config":{"merge":[{"source":"http://x"}]}}}"#.into(),
            "$.ignition.config: not supported by keel",
        ),
        (h(r#""kernelArguments":{"shouldExist":["quiet"]}"#), "$.kernelArguments: not supported by keel"),
        (h(r#""bogus":1"#), "$.bogus: unknown field"),
        (
            r#"{"ignition":{"version":"3.2.0"},"kernelArguments":{}}"#.into(),
            "$.kernelArguments: unknown field in spec 3.2.0 (new in 3.3.0)",
        ),
        (
            r#"{"ignition":{"version":"3.1.0"},"passwd":{"users":[{"name":"a","shouldExist":true}]}}"#.into(),
            "$.passwd.users.0.shouldExist: unknown field in spec 3.1.0 (new in 3.2.0)",
        ),
        (
            r#"{"ignition":{"version":"3.0.0"},"storage":{"luks":[]}}"#.into(),
            "$.storage.luks: unknown field in spec 3.0.0 (new in 3.2.0)",
        ),
        (h(r#""storage":{"disks":[{"device":"/dev/vda"}]}"#), "$.storage.disks: not supported by keel"),
        (h(r#""storage":{"filesystems":[{"device":"/dev/vdb"}]}"#), "$.storage.filesystems: not supported by keel"),
        (file(r#""path":"etc/x""#), "$.storage.files.0.path: path \"etc/x\" is not absolute"),
        (file(r#""path":"/../etc/shadow""#), "$.storage.files.0.path: path \"/../etc/shadow\" leaves / (contains \"..\")"),
        (file(r#""path":"/""#), "$.storage.files.0.path: path must not be /"),
        (file(r#""mode":420"#), "$.storage.files.0.path: missing"),
        (file(r#""path":"/x","mode":"0644""#), "$.storage.files.0.mode: expected an integer, found a string"),
        (file(r#""path":"/x","mode":4096"#), "$.storage.files.0.mode: mode 4096 is out of range (0 to 4095, i.e. 0o7777)"),
        (file(r#""path":"/x","owner":"core""#), "$.storage.files.0.owner: unknown field"),
        (
            file(r#""path":"/x","overwrite":true"#),
            "$.storage.files.0.contents.source: missing, but overwrite is true (Ignition requires a source to overwrite)",
        ),
        (file(r#""path":"/x","user":{"id":1,"name":"core"}"#), "$.storage.files.0.user: id and name are mutually exclusive"),
        (file(r#""path":"/x","user":{"id":-1}"#), "$.storage.files.0.user.id: id -1 is out of range"),
        (file(r#""path":"/x","append":[{"source":"data:,x"}]"#), "$.storage.files.0.append: not supported by keel"),
        (
            file(r#""path":"/x","contents":{"source":"https://example.com/x"}"#),
            "$.storage.files.0.contents.source: URL scheme \"https\" is not supported by keel (only data: URLs; the initramfs has no network)",
        ),
        (
            file(r#""path":"/x","contents":{"source":"data:;base64,aGVsbG8!"}"#),
            "$.storage.files.0.contents.source: invalid base64 at offset 20: invalid byte '!'",
        ),
        (
            file(r#""path":"/x","contents":{"source":"data:,%g0"}"#),
            "$.storage.files.0.contents.source: invalid percent-escape at offset 6",
        ),
        (
            file(r#""path":"/x","contents":{"source":"data:,x","compression":"xz"}"#),
            "$.storage.files.0.contents.compression: unsupported compression \"xz\" (\"gzip\", or \"\" for none)",
        ),
        (
            file(r#""path":"/x","contents":{"source":"data:,x","compression":"gzip"}"#),
            "$.storage.files.0.contents.compression: gzip: unexpected end of file",
        ),
        (
            file(r#""path":"/x","contents":{"source":"data:,x","verification":{"hash":"md5-00"}}"#),
            "$.storage.files.0.contents.verification.hash: unsupported hash function \"md5\" (sha512 or sha256)",
        ),
        (
            file(r#""path":"/x","contents":{"source":"data:,x","verification":{"hash":"sha256-00"}}"#),
            "$.storage.files.0.contents.verification.hash: sha256 hash must be 64 hex digits",
        ),
        (
            file(r#""path":"/x","contents":{"source":"data:,hello","verification":{"hash":"sha256-0000000000000000000000000000000000000000000000000000000000000000"}}"#),
            "$.storage.files.0.contents.verification.hash: contents do not match: sha256 is 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ),
        (
            file(r#""path":"/x","contents":{"httpHeaders":[{"name":"a","value":"b"}],"source":"data:,x"}"#),
            "$.storage.files.0.contents.httpHeaders: not supported by keel",
        ),
        (
            h(r#""storage":{"files":[{"path":"/x"}],"links":[{"path":"/x/","target":"/y"}]}"#),
            "$.storage.links.0.path: duplicate path /x (also at $.storage.files.0)",
        ),
        (h(r#""storage":{"links":[{"path":"/x"}]}"#), "$.storage.links.0.target: missing"),
        (h(r#""passwd":{"users":[{"name":"Bad Name"}]}"#), "$.passwd.users.0.name: invalid name \"Bad Name\""),
        (h(r#""passwd":{"users":[{"name":"a","noUserGroup":true}]}"#), "$.passwd.users.0.noUserGroup: not supported by keel"),
        (
            h(r#""passwd":{"users":[{"name":"a","shouldExist":false}]}"#),
            "$.passwd.users.0.shouldExist: deleting users is not supported by keel",
        ),
        (
            h(r#""passwd":{"users":[{"name":"a","sshAuthorizedKeys":["k1","k2\nk3"]}]}"#),
            "$.passwd.users.0.sshAuthorizedKeys.1: an SSH key must be one line",
        ),
        (
            h(r#""passwd":{"users":[{"name":"a","shell":"/bin/sh:x"}]}"#),
            "$.passwd.users.0.shell: shell must not contain ':', NUL or a newline",
        ),
        (
            h(r#""passwd":{"users":[{"name":"a"},{"name":"a"}]}"#),
            "$.passwd.users.1.name: duplicate user \"a\" (also at $.passwd.users.0)",
        ),
        (h(r#""systemd":{"units":[{"name":"foo"}]}"#), "$.systemd.units.0.name: invalid unit name \"foo\""),
        (h(r#""systemd":{"units":[{"enabled":true}]}"#), "$.systemd.units.0.name: missing"),
        (
            h(r#""systemd":{"units":[{"name":"a.service","enabled":"yes"}]}"#),
            "$.systemd.units.0.enabled: expected a boolean, found a string",
        ),
        (
            h(r#""systemd":{"units":[{"name":"a.service","mask":true,"contents":"x"}]}"#),
            "$.systemd.units.0.mask: a masked unit cannot also have contents",
        ),
        (
            h(r#""systemd":{"units":[{"name":"a.service","dropins":[{"name":"x"}]}]}"#),
            "$.systemd.units.0.dropins.0.name: invalid drop-in name \"x\" (NAME.conf)",
        ),
    ];
    let mut bad = Vec::new();
    for (input, want) in &table {
        let got = ignition::parse(input.as_bytes())
            .expect_err(input)
            .to_string();
        if &got != want {
            bad.push(format!("input {input}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn ignition_zero_values_of_unsupported_fields_are_accepted() {
    let text = r#"{"ignition":{"version":"3.4.0","config":{"merge":[],"replace":{"source":null}},"timeouts":{}},
        "kernelArguments":{"shouldExist":[]},"storage":{"disks":[],"raid":null,"files":[{"path":"/x","append":[]}]}}"#;
    let (cfg, _) = ignition::parse(text.as_bytes()).unwrap();
    assert_eq!(cfg.files.len(), 1);
    assert_eq!(cfg.files[0].contents, None);
}

const FULL_CC: &str = r#"#cloud-config
hostname: node1
ssh_authorized_keys:
  - ssh-ed25519 AAAA top@x
users:
  - default
  - name: core
    ssh_authorized_keys: ["ssh-ed25519 AAAA core@x"]
  - name: bob
    groups: [sudo, docker]
    passwd: "$6$abc$def"
    lock_passwd: true
    sudo: ALL=(ALL) NOPASSWD:ALL
  - name: carol
    groups: "adm, users"
    ssh-authorized-keys:
      - ssh-rsa BBBB carol@x
write_files:
  - path: /etc/app.conf
    permissions: '0600'
    owner: core:core
    content: |
      key=value
  - path: /etc/b64
    encoding: b64
    content: aGVsbG8=
  - path: /etc/gz
    encoding: gz+b64
    content: H4sIAAAAAAAAA8tIzcnJBwCGphA2BQAAAA==
coreos:
  units:
    - name: hello.service
      command: start
      enable: true
      content: |
        [Service]
        ExecStart=/bin/true
    - name: docker.service
      drop-ins:
        - name: 50-opts.conf
          content: "[Service]\n"
"#;

#[test]
fn cloud_config_full() {
    let cfg = cloudconfig::parse(FULL_CC.as_bytes()).unwrap();
    assert_eq!(cfg.files[0].node.path, "/etc/hostname");
    assert_eq!(cfg.files[0].contents.as_deref(), Some(&b"node1\n"[..]));
    let core = cfg.users.iter().find(|u| u.name == "core").unwrap();
    assert_eq!(
        core.ssh_authorized_keys,
        vec!["ssh-ed25519 AAAA core@x", "ssh-ed25519 AAAA top@x"]
    );
    let bob = cfg.users.iter().find(|u| u.name == "bob").unwrap();
    assert_eq!(bob.groups, vec!["sudo", "docker"]);
    assert_eq!(bob.password_hash.as_deref(), Some("$6$abc$def"));
    assert!(bob.lock_password);
    assert_eq!(bob.sudo, vec!["ALL=(ALL) NOPASSWD:ALL"]);
    let carol = cfg.users.iter().find(|u| u.name == "carol").unwrap();
    assert_eq!(carol.groups, vec!["adm", "users"]);
    assert_eq!(carol.ssh_authorized_keys, vec!["ssh-rsa BBBB carol@x"]);
    assert_eq!(cfg.files[1].node.path, "/etc/app.conf");
    assert_eq!(cfg.files[1].mode, Some(0o600));
    assert_eq!(cfg.files[1].contents.as_deref(), Some(&b"key=value\n"[..]));
    assert_eq!(cfg.files[1].node.user, Some(Owner::Name("core".into())));
    assert_eq!(cfg.files[2].contents.as_deref(), Some(&b"hello"[..]));
    assert_eq!(cfg.files[3].contents.as_deref(), Some(&b"hello"[..]));
    assert!(cfg.units[0].start);
    assert_eq!(cfg.units[0].enabled, Some(true));
    assert_eq!(cfg.units[1].dropins[0].name, "50-opts.conf");
}

#[test]
fn cloud_config_top_level_keys_create_core() {
    let cfg = cloudconfig::parse(b"#cloud-config\nssh_authorized_keys: [\"k1\"]\n").unwrap();
    assert_eq!(cfg.users.len(), 1);
    assert_eq!(cfg.users[0].name, "core");
    assert_eq!(cfg.users[0].ssh_authorized_keys, vec!["k1"]);
    assert!(cloudconfig::parse(b"#cloud-config\n").unwrap().is_empty());
}

#[test]
fn cloud_config_negative_fixtures() {
    let table: &[(&str, &str)] = &[
        ("hostname: x\n", "line 1: cloud-config must start with \"#cloud-config\""),
        ("#cloud-config\n- a\n", "(document): expected a mapping, found a list"),
        ("#cloud-config\nhostname: [\n", "line 3 column 1: invalid YAML: while parsing a node, did not find expected node content"),
        ("#cloud-config\na: 1\n---\nb: 2\n", "line 1: expected one YAML document, found 2"),
        ("#cloud-config\nhostname: bad_host!\n", "hostname: invalid hostname \"bad_host!\""),
        ("#cloud-config\nhostname: 12\n", "hostname: expected a string, found an integer"),
        ("#cloud-config\nruncmd: [ls]\n", "runcmd: not supported by keel"),
        ("#cloud-config\nfrobnicate: 1\n", "frobnicate: unknown key"),
        ("#cloud-config\nssh_authorized_keys: k1\n", "ssh_authorized_keys: expected a list, found a string"),
        ("#cloud-config\nssh_authorized_keys: [\"\"]\n", "ssh_authorized_keys[0]: an SSH key must be one non-empty line"),
        ("#cloud-config\nusers:\n  - groups: [a]\n", "users[0].name: missing"),
        ("#cloud-config\nusers:\n  - name: Bob\n", "users[0].name: invalid name \"Bob\""),
        ("#cloud-config\nusers:\n  - name: bob\n    ssh_import_id: [gh:bob]\n", "users[0].ssh_import_id: not supported by keel"),
        ("#cloud-config\nusers:\n  - name: bob\n    sudo: [\"\"]\n", "users[0].sudo: a sudo rule must be one non-empty line"),
        ("#cloud-config\nusers:\n  - name: bob\n    lock_passwd: 1\n", "users[0].lock_passwd: expected true or false, found an integer"),
        ("#cloud-config\nusers:\n  - name: bob\n    colour: red\n", "users[0].colour: unknown key"),
        ("#cloud-config\nusers:\n  - name: bob\n    passwd: \"a:b\"\n", "users[0].passwd: passwd must not contain ':', NUL or a newline"),
        ("#cloud-config\nwrite_files:\n  - content: x\n", "write_files[0].path: missing"),
        ("#cloud-config\nwrite_files:\n  - path: rel/x\n", "write_files[0].path: path \"rel/x\" is not absolute"),
        ("#cloud-config\nwrite_files:\n  - path: /a/../../etc/shadow\n", "write_files[0].path: path \"/a/../../etc/shadow\" leaves / (contains \"..\")"),
        ("#cloud-config\nwrite_files:\n  - path: /x\n    permissions: 0999\n", "write_files[0].permissions: expected an octal mode such as 0644, found a number"),
        ("#cloud-config\nwrite_files:\n  - path: /x\n    permissions: 017777\n", "write_files[0].permissions: invalid octal mode 0o17777"),
        ("#cloud-config\nwrite_files:\n  - path: /x\n    permissions: [1]\n", "write_files[0].permissions: expected an octal mode such as 0644, found a list"),
        ("#cloud-config\nwrite_files:\n  - path: /x\n    permissions: '0999'\n", "write_files[0].permissions: invalid octal mode \"0999\""),
        ("#cloud-config\nwrite_files:\n  - path: /x\n    encoding: b64\n    content: '!!'\n", "write_files[0].encoding: content: invalid base64 at offset 0: invalid byte '!'"),
        ("#cloud-config\nwrite_files:\n  - path: /x\n    encoding: gzip\n    content: x\n", "write_files[0].encoding: gzip: unexpected end of file"),
        ("#cloud-config\nwrite_files:\n  - path: /x\n    encoding: rot13\n", "write_files[0].encoding: unsupported encoding \"rot13\""),
        ("#cloud-config\nwrite_files:\n  - path: /x\n    append: true\n", "write_files[0].append: not supported by keel"),
        ("#cloud-config\nwrite_files:\n  - path: /x\n  - path: /x\n", "write_files[1].path: duplicate path /x (also at write_files[0])"),
        ("#cloud-config\ncoreos:\n  etcd2: {name: x}\n", "coreos.etcd2: not supported by keel"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: x.service\n      command: explode\n", "coreos.units[0].command: unknown command \"explode\" (start, stop, restart, reload, try-restart, reload-or-restart, reload-or-try-restart)"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: x.service\n      enable: maybe\n", "coreos.units[0].enable: expected true or false, found a string"),
        ("#cloud-config\ncoreos:\n  units:\n    - content: x\n", "coreos.units[0].name: missing"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: x\n", "coreos.units[0].name: invalid unit name \"x\""),
        ("#cloud-config\ncoreos:\n  units:\n    - name: x.service\n      drop-ins: [{name: y}]\n", "coreos.units[0].drop-ins[0].name: invalid drop-in name \"y\" (NAME.conf)"),
    ];
    let mut bad = Vec::new();
    for (input, want) in table {
        let got = cloudconfig::parse(input.as_bytes())
            .expect_err(input)
            .to_string();
        if &got != want {
            bad.push(format!("input {input:?}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn meta_data() {
    assert_eq!(
        cloudconfig::meta_data_hostname(b"instance-id: i-1\nlocal-hostname: vm1\n")
            .unwrap()
            .as_deref(),
        Some("vm1")
    );
    assert_eq!(
        cloudconfig::meta_data_hostname(b"instance-id: i-1\n").unwrap(),
        None
    );
    assert_eq!(cloudconfig::meta_data_hostname(b"").unwrap(), None);
    assert_eq!(
        cloudconfig::meta_data_hostname(b"local-hostname: a b\n")
            .unwrap_err()
            .to_string(),
        "local-hostname: invalid hostname \"a b\""
    );
}

#[test]
fn format_detection() {
    assert_eq!(parse_config(b"  \n").unwrap(), None);
    let (_, f) = parse_config(b"\n{\"ignition\":{\"version\":\"3.1.0\"}}")
        .unwrap()
        .unwrap();
    assert_eq!(f, Format::Ignition("3.1.0".into()));
    let (_, f) = parse_config(b"#cloud-config\n").unwrap().unwrap();
    assert_eq!(f, Format::CloudConfig);
    assert_eq!(
        parse_config(b"#!/bin/sh\necho hi\n")
            .unwrap_err()
            .to_string(),
        "line 1: shell scripts as user data are not supported by keel"
    );
    assert_eq!(
        parse_config(b"hello").unwrap_err().to_string(),
        "line 1: neither an Ignition config (JSON object), #cloud-config, Butane YAML (variant/version) nor MIME multipart"
    );
}

proptest! {
    #[test]
    fn ignition_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = ignition::parse(&data);
        let _ = parse_config(&data);
    }

    #[test]
    fn ignition_structured_never_panics(s in r#"\{"ignition":\{"version":"3\.[0-4]\.0"\},"(storage|passwd|systemd)":\{"(files|users|units|links)":\[\{"[a-z]{1,6}":("[ -~]{0,12}"|[0-9]{1,5}|true|\{\})\}\]\}\}"#) {
        let _ = ignition::parse(s.as_bytes());
    }

    #[test]
    fn cloud_config_never_panics(s in "#cloud-config\n(([a-z_]{1,12}): ?(\\[|\\{|-|\\|)?[ -~\n]{0,40}\n){0,6}") {
        let _ = cloudconfig::parse(s.as_bytes());
        let _ = cloudconfig::meta_data_hostname(s.as_bytes());
    }

    #[test]
    fn butane_never_panics(s in "variant: (flatcar|fcos)\nversion: 1\\.[0-6]\\.0\n((passwd|storage|systemd):\n  (users|files|units|links|directories): ?\n(    - [a-z_]{1,10}: ?[ -~]{0,20}\n(      [a-z_]{1,10}: ?[ -~]{0,20}\n){0,3}){0,3}){0,3}") {
        let opts = crate::butane::Options::default();
        let _ = crate::butane::parse(s.as_bytes(), &opts);
        let _ = crate::butane::translate(s.as_bytes(), &opts);
        let _ = parse_config(s.as_bytes());
    }

    #[test]
    fn mime_never_panics(s in "Content-Type: multipart/mixed; boundary=b\n\n(--b\n(Content-[A-Za-z-]{1,12}: [ -~]{0,20}\n){0,2}\n[ -~\n]{0,40}\n){0,3}(--b--)?") {
        let _ = crate::mime::parse(s.as_bytes());
        let _ = parse_config(s.as_bytes());
    }

    #[test]
    fn cloud_config_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut text = b"#cloud-config\n".to_vec();
        text.extend_from_slice(&data);
        let _ = cloudconfig::parse(&text);
        let _ = cloudconfig::meta_data_hostname(&data);
    }
}
