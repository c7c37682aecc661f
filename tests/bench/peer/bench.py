#!/usr/bin/env python3
"""First-boot benchmark of Keel against its peer (issue 8).

Boots three configurations under one QEMU command line (TCG, 2 vCPU,
1 GiB, virtio disk, virtio-net on user networking, virtio-rng), each
KEEL_BENCH_RUNS times, interleaved, from a fresh copy of its disk with the
host's page cache dropped before every boot:

  peer           Debian 12 + cloud-init (built by build-peer.sh), Debian's
                 own initramfs, provisioned from a cidata ISO
  keel-cidata    Keel's image, provisioned from the same cidata ISO
  keel-ignition  Keel's image, provisioned by Ignition over fw_cfg

Each boot gets the same freshly generated SSH key for `core` and the same
hostname. Measured per boot: wall time from QEMU start to the first
successful `ssh core@` login; guest time from kernel start to switch_root
(systemd's own "kernel" figure from `systemd-analyze time`: neither
initramfs is systemd, so it is the time until systemd starts in the real
root, for both); the initramfs phase alone (from the kernel's
"Run /init as init process" stamp to that); multi-user.target's
ActiveEnterTimestampMonotonic; wall time until `systemctl
is-system-running --wait` returns; memory used (MemTotal - MemAvailable)
once the system is running. Writes OUT/peers.json and OUT/peers.md.

Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HOSTNAME = "bench-host"
SSH_TIMEOUT = 300
# How SSH is polled. QEMU's user network accepts a forwarded connection on
# the host at once and only then connects to the guest: while the guest has
# no address yet the connection just hangs (slirp retransmits the SYN with
# back-off), once it has one but sshd is not listening the connection is
# closed at once, and once sshd listens its banner arrives, after a few
# seconds on a loaded TCG guest. A plain `ssh -o ConnectTimeout=N` loop
# therefore either hangs N seconds per attempt while the guest has no
# address or, with a short N, never gets past a slow banner. So sshd's
# banner is watched with plain TCP probes, gently (every probe costs the
# guest an sshd process once it listens):
#   - until the guest has closed a probe, a probe every PROBE_EVERY s that
#     is dropped after SHORT_WAIT s (it may be hanging in slirp), and one
#     in LONG_EVERY kept LONG_WAIT s (sshd may listen before the network is
#     up and answer slowly);
#   - once the guest has closed one (its network is up), one probe at a
#     time, kept LONG_WAIT s.
# The first banner ends the wait; then `ssh core@ true` runs (ConnectTimeout
# LOGIN_TIMEOUT), and its end is the measurement.
PROBE_EVERY = 1.0
SHORT_WAIT = 2
LONG_WAIT = 30
LONG_EVERY = 10
LOGIN_TIMEOUT = 30
# Kernel arguments both systems get: the serial console and its log level.
# Keel's own (systemd.gpt_auto=0, the verity hashes, ...) come from image.json.
CONSOLE_ARGS = "console=ttyS0,115200 loglevel=4 panic=5 systemd.show_status=auto"


def log(msg):
    print(f"peer-bench: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def file_sizes(path):
    st = os.stat(path)
    return {"bytes": st.st_size, "allocated": st.st_blocks * 512}


def median(xs):
    return statistics.median(xs) if xs else None


# --- inputs -----------------------------------------------------------------


def make_inputs(work):
    """Key pair, the cidata ISO and the Ignition config (shared by all boots)."""
    key = work / "id_ed25519"
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "keel-bench", "-f", str(key)])
    public = key.with_suffix(".pub").read_text().strip()
    seed = work / "seed"
    shutil.rmtree(seed, ignore_errors=True)
    seed.mkdir()
    # cloud-init's users schema; Keel's cloud-config reader takes the same.
    (seed / "user-data").write_text(
        "#cloud-config\n"
        f"hostname: {HOSTNAME}\n"
        "users:\n"
        "  - name: core\n"
        "    shell: /bin/bash\n"
        "    sudo: ALL=(ALL) NOPASSWD:ALL\n"
        "    ssh_authorized_keys:\n"
        f"      - {public}\n"
    )
    (seed / "meta-data").write_text(f"instance-id: keel-bench\nlocal-hostname: {HOSTNAME}\n")
    iso = work / "seed.iso"
    run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
         str(seed / "user-data"), str(seed / "meta-data")])
    ign = work / "config.ign"
    ign.write_text(json.dumps({
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [public]}]},
        "storage": {"files": [{
            "path": "/etc/hostname",
            "mode": 0o644,
            "overwrite": True,
            "contents": {"source": f"data:,{HOSTNAME}%0A"},
        }]},
    }, indent=1))
    return key, iso, ign


def configs(build, peer_dir, iso, ign):
    image = json.loads((build / "image.json").read_text())
    env = dict(
        line.split("=", 1) for line in (peer_dir / "peer.env").read_text().splitlines() if "=" in line
    )
    iso_drive = ["-drive", f"file={iso},if=virtio,format=raw,readonly=on"]
    keel = {
        "disk": build / image["qcow2"],
        "kernel": build / image["kernel"],
        "initrd": build / image["initramfs"],
        "append": image["cmdline"],
    }
    return [
        {
            "name": "peer",
            "disk": peer_dir / "peer.qcow2",
            "kernel": peer_dir / "vmlinuz",
            "initrd": peer_dir / "initrd.img",
            "append": f"root=UUID={env['ROOT_UUID']} ro {CONSOLE_ARGS}",
            "extra": iso_drive,
        },
        dict(keel, name="keel-cidata", extra=iso_drive),
        dict(keel, name="keel-ignition",
             extra=["-fw_cfg", f"name=opt/org.flatcar-linux/config,file={ign}"]),
    ], image, env


def qemu_command(cfg, disk, port, console):
    """One command line for every configuration; only the payload differs."""
    return [
        "qemu-system-x86_64",
        "-machine", "q35,accel=tcg", "-cpu", "max",
        "-smp", "2", "-m", "1024",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(cfg["kernel"]), "-initrd", str(cfg["initrd"]),
        "-append", cfg["append"],
        "-drive", f"if=virtio,file={disk},format=qcow2",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{console}",
    ] + cfg["extra"]


# --- one boot ---------------------------------------------------------------


def ssh_cmd(key, port, command, connect_timeout=2, quiet=True):
    return [
        "ssh", *(["-q"] if quiet else []), "-i", str(key), "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
        "core@127.0.0.1", "--", command,
    ]


def wait_banner(port, qemu, deadline):
    """Time (monotonic) the first SSH banner arrives on the forwarded port."""
    open_ = {}  # socket -> time it is given up
    next_at = 0.0
    n = 0
    net_up = False
    try:
        while time.monotonic() < deadline:
            if qemu.poll() is not None:
                raise RuntimeError(f"QEMU exited ({qemu.returncode}): "
                                   f"{qemu.stderr.read().decode(errors='replace')}")
            now = time.monotonic()
            due = (not open_) if net_up else (now >= next_at)
            if due:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                long_ = net_up or n % LONG_EVERY == LONG_EVERY - 1
                open_[s] = now + (LONG_WAIT if long_ else SHORT_WAIT)
                n += 1
                next_at = now + PROBE_EVERY
            for s, until in list(open_.items()):
                if now > until:
                    s.close()
                    del open_[s]
            ready, _, _ = select.select(list(open_), [], [], 0.05)
            for s in ready:
                try:
                    data = s.recv(64)
                except ConnectionRefusedError:
                    data = None  # QEMU's forward is not listening yet
                except OSError:
                    data = b""
                if data and data.startswith(b"SSH-"):
                    return time.monotonic()
                # Closed or reset by the guest: its network is up, sshd is
                # not listening yet.
                if data is not None:
                    net_up = True
                s.close()
                del open_[s]
            if net_up and not open_:
                time.sleep(0.2)
        raise RuntimeError(f"no SSH banner within {SSH_TIMEOUT} s")
    finally:
        for s in open_:
            s.close()


def drop_caches():
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError as e:
        log(f"cannot drop the page cache ({e}); boots are not cold")
        return False


def parse_span(text):
    """systemd's time spans ("1min 2.345s", "812ms", "1.2s") in seconds."""
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(min|ms|us|s|h)", text):
        total += float(num) * {"h": 3600, "min": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


PROBE = r"""
echo "=== analyze"; systemd-analyze time 2>&1 | head -n 1
echo "=== multiuser"; systemctl show -p ActiveEnterTimestampMonotonic multi-user.target
echo "=== hostname"; hostname
echo "=== meminfo"; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo
echo "=== init"; sudo -n dmesg 2>/dev/null | grep -m1 'Run /init as init process'
echo "=== uptime"; cat /proc/uptime
echo "=== failed"; systemctl --failed --no-legend --plain 2>&1 | head -n 5
echo "=== membreak"; grep -E '^(Buffers|Cached|Shmem|AnonPages|Slab|SReclaimable|SUnreclaim|KernelStack|PageTables|Percpu):' /proc/meminfo
echo "=== rss"; ps -eo rss=,comm= --sort=-rss | head -n 12
echo "=== sshd"; systemctl show -p ActiveEnterTimestampMonotonic ssh.service
echo "=== blame"; systemd-analyze blame 2>&1 | head -n 12
echo "=== chain"; systemd-analyze critical-chain 2>&1 | head -n 25
"""


def parse_probe(out):
    sec = {}
    cur = None
    for line in out.splitlines():
        if line.startswith("=== "):
            cur = line[4:].strip()
            sec[cur] = []
        elif cur:
            sec[cur].append(line)
    r = {}
    analyze = " ".join(sec.get("analyze", []))
    r["analyze"] = analyze
    m = re.search(r"in (.*?) \(kernel\)", analyze)
    r["kernel_s"] = parse_span(m.group(1)) if m else None
    m = re.search(r"\+ ([^+=]*?) \(initrd\)", analyze)
    r["initrd_s"] = parse_span(m.group(1)) if m else None
    m = re.search(r"ActiveEnterTimestampMonotonic=(\d+)", " ".join(sec.get("multiuser", [])))
    r["multi_user_s"] = int(m.group(1)) / 1e6 if m and int(m.group(1)) > 0 else None
    r["hostname"] = " ".join(sec.get("hostname", [])).strip()
    mem = {}
    for line in sec.get("meminfo", []):
        k, v = line.split(":", 1)
        mem[k] = int(v.split()[0])
    r["mem_total_kib"] = mem.get("MemTotal")
    r["mem_used_kib"] = mem["MemTotal"] - mem["MemAvailable"] if len(mem) == 2 else None
    m = re.search(r"\[\s*([\d.]+)\] Run /init", " ".join(sec.get("init", [])))
    r["run_init_s"] = float(m.group(1)) if m else None
    r["failed_units"] = [x for x in sec.get("failed", []) if x.strip()]
    r["blame"] = sec.get("blame", [])
    r["meminfo_kib"] = {line.split(":")[0]: int(line.split()[1]) for line in sec.get("membreak", [])
                        if ":" in line}
    r["top_rss"] = [x.strip() for x in sec.get("rss", [])]
    m = re.search(r"ActiveEnterTimestampMonotonic=(\d+)", " ".join(sec.get("sshd", [])))
    r["sshd_active_s"] = int(m.group(1)) / 1e6 if m and int(m.group(1)) > 0 else None
    r["critical_chain"] = sec.get("chain", [])
    return r


def boot_once(cfg, key, work, logs, run_no):
    name = cfg["name"]
    disk = work / f"disk-{name}.qcow2"
    disk.unlink(missing_ok=True)
    # A fresh copy of the shipped disk: a first boot every time.
    run(["cp", "--sparse=always", str(cfg["disk"]), str(disk)])
    cold = drop_caches()
    load = Path("/proc/loadavg").read_text().split()[:3]
    console = logs / f"{name}-{run_no}.log"
    console.unlink(missing_ok=True)
    port = free_port()
    cmd = qemu_command(cfg, disk, port, console)
    t0 = time.monotonic()
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    result = {"config": name, "run": run_no, "load_before": load, "cold": cold}
    try:
        ssh_s = None
        ssh_log = result["ssh_log"] = []
        while time.monotonic() - t0 < SSH_TIMEOUT:
            banner = wait_banner(port, qemu, t0 + SSH_TIMEOUT)
            result.setdefault("banner_wall_s", banner - t0)
            r = subprocess.run(ssh_cmd(key, port, "true", LOGIN_TIMEOUT, quiet=False),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            done = time.monotonic() - t0
            err = (r.stderr.strip().splitlines() or [""])[-1]
            ssh_log.append(f"banner {banner - t0:.1f} s, login done {done:.1f} s rc={r.returncode} {err}")
            if r.returncode == 0:
                ssh_s = done
                break
            time.sleep(0.25)
        if ssh_s is None:
            raise RuntimeError(f"{name}: no SSH login within {SSH_TIMEOUT} s (console: {console})")
        result["ssh_wall_s"] = ssh_s
        r = subprocess.run(ssh_cmd(key, port, "systemctl is-system-running --wait", 30),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=SSH_TIMEOUT)
        result["running_wall_s"] = time.monotonic() - t0
        result["state"] = r.stdout.strip()
        r = subprocess.run(ssh_cmd(key, port, PROBE, 30), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        result.update(parse_probe(r.stdout))
    finally:
        qemu.kill()
        qemu.wait()
        disk.unlink(missing_ok=True)
    text = console.read_text(errors="replace") if console.exists() else ""
    m = re.findall(r"keel-init: \[\s*([\d.]+)\] switching root", text)
    result["keel_init_switch_root_s"] = float(m[-1]) if m else None
    if result["hostname"] != HOSTNAME:
        raise RuntimeError(f"{name}: hostname is {result['hostname']!r}, not {HOSTNAME!r}: "
                           f"provisioning did not apply (console: {console})")
    if result["kernel_s"] is not None and result["run_init_s"] is not None:
        result["initramfs_s"] = result["kernel_s"] - result["run_init_s"]
    else:
        result["initramfs_s"] = None
    log(f"{name} #{run_no}: SSH {ssh_s:.1f} s, running {result['running_wall_s']:.1f} s "
        f"({result['state']}), {result['analyze']!r}, multi-user {result['multi_user_s']}, "
        f"initramfs {result['initramfs_s']}, used {result['mem_used_kib']} KiB, load {' '.join(load)}")
    return result


# --- report -----------------------------------------------------------------

MEASURES = [
    # key, title, unit, scale, decimals
    ("ssh_wall_s", "QEMU start → first SSH login as core (wall)", "s", 1, 1),
    ("banner_wall_s", "QEMU start → sshd's banner on the forwarded port (wall)", "s", 1, 1),
    ("sshd_active_s", "kernel start → ssh.service active (guest)", "s", 1, 1),
    ("kernel_s", "kernel start → switch_root (guest, systemd-analyze \"kernel\")", "s", 1, 2),
    ("initramfs_s", "initramfs phase: `Run /init` → switch_root (guest)", "s", 1, 2),
    ("multi_user_s", "kernel start → multi-user.target (guest)", "s", 1, 1),
    ("running_wall_s", "QEMU start → `is-system-running` done (wall)", "s", 1, 1),
    ("mem_used_kib", "memory used once running (MemTotal − MemAvailable)", "MiB", 1 / 1024, 1),
]

TARGETS = [
    # key, target ratio, words
    ("ssh_wall_s", 0.25, "first boot to SSH ≤ 0.25 × peer"),
    ("initramfs_s", 0.2, "initramfs phase ≤ 0.2 × peer"),
    ("mem_used_kib", 0.6, "memory after boot ≤ 0.6 × peer"),
]

NAMES = ["peer", "keel-cidata", "keel-ignition"]


def fmt(v, scale=1, dec=1):
    return "n/a" if v is None else f"{v * scale:.{dec}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


def report(results, meta):
    by = {n: [r for r in results if r["config"] == n] for n in NAMES}

    def vals(n, k):
        return [r[k] for r in by[n] if r.get(k) is not None]

    med = {(n, k): median(vals(n, k)) for n in NAMES for k, *_ in MEASURES}
    L = []
    L.append(f"# Keel against its peer: first boot ({meta['date']})")
    L.append("")
    L.append(f"Machine: {meta['cpu']}, {meta['nproc']} cores, {meta['mem_gib']} GiB; host kernel "
             f"{meta['host_kernel']}; {meta['qemu']}. Load average at the start: "
             f"{meta['load_start']} (1/5/15 min), at the end: {meta['load_end']}. "
             f"{meta['runs']} boots per configuration, interleaved, each from a fresh copy of "
             f"its disk with the host page cache dropped before QEMU starts "
             f"({'done' if meta['cold'] else 'NOT possible here: warm caches'}).")
    load1 = float(meta["load_start"].split()[0])
    if load1 > meta["nproc"] / 2:
        L.append("")
        L.append(f"**The host was busy** (load {meta['load_start']} on {meta['nproc']} cores at the "
                 "start: other work, including other QEMU guests, shared the CPUs). TCG guests slow "
                 "down with it, so absolute times are inflated and noisy; the configurations were "
                 "interleaved so that they share the noise, and the ratios are what compare.")
    L.append("")
    L.append("Identical QEMU settings for all three: `" + meta["qemu_common"] + "`; "
             "the cidata ISO as a second virtio disk (peer, keel-cidata) or the Ignition "
             "config as fw_cfg `opt/org.flatcar-linux/config` (keel-ignition).")
    L.append("")
    L.append("| configuration | what boots |")
    L.append("|---|---|")
    L.append(f"| peer | Debian 12 ({meta['peer']['PACKAGES'].strip(chr(34))}; systemd "
             f"{meta['peer'].get('SYSTEMD')}, cloud-init {meta['peer'].get('CLOUD_INIT')}), "
             f"ext4 root, Debian's initramfs-tools initrd ({meta['sizes']['peer_initrd']:,} bytes), "
             f"cmdline `{meta['peer_append']}` |")
    L.append(f"| keel-cidata | Keel {meta['keel_version']} (image built {meta.get('keel_built', '?')}, "
             f"checkout at `{meta['keel_commit']}` when measured), its "
             f"initramfs ({meta['sizes']['keel_initramfs']:,} bytes), the same cidata ISO |")
    L.append("| keel-ignition | the same Keel image, Ignition 3.4 (users.core.sshAuthorizedKeys, "
             "/etc/hostname) over fw_cfg |")
    L.append("")
    L.append(f"Same kernel: {meta['same_kernel']}.")
    L.append("")
    L.append("## Targets (issue 8)")
    L.append("")
    L.append("![Keel / peer, medians](bench-peers.svg)")
    L.append("")
    L.append("| target | peer median | keel-cidata | ratio | verdict | keel-ignition | ratio | verdict |")
    L.append("|---|---:|---:|---:|---|---:|---:|---|")
    for k, t, words in TARGETS:
        _, _, unit, scale, dec = next(m for m in MEASURES if m[0] == k)
        row = [words, f"{fmt(med['peer', k], scale, dec)} {unit}"]
        for n in NAMES[1:]:
            rr = ratio(med[n, k], med["peer", k])
            verdict = "n/a" if rr is None else ("**PASS**" if rr <= t else "**MISS**")
            row += [f"{fmt(med[n, k], scale, dec)} {unit}", fmt(rr, 1, 3), verdict]
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    L.append("## Measures (median, min, max over the boots; ratio = Keel median / peer median)")
    for k, title, unit, scale, dec in MEASURES:
        L.append("")
        L.append(f"### {title} ({unit})")
        L.append("")
        L.append("| configuration | median | min | max | runs | Keel / peer |")
        L.append("|---|---:|---:|---:|---|---:|")
        for n in NAMES:
            v = vals(n, k)
            rr = "" if n == "peer" else fmt(ratio(med[n, k], med["peer", k]), 1, 3)
            L.append(f"| {n} | {fmt(median(v), scale, dec)} | {fmt(min(v) if v else None, scale, dec)} | "
                     f"{fmt(max(v) if v else None, scale, dec)} | "
                     f"{', '.join(fmt(x, scale, dec) for x in v)} | {rr} |")
    L.append("")
    L.append("### Where the memory is (median KiB from /proc/meminfo once running)")
    L.append("")
    fields = ["AnonPages", "Cached", "Shmem", "Buffers", "SReclaimable", "SUnreclaim", "KernelStack",
              "PageTables"]
    L.append("| configuration | " + " | ".join(fields) + " |")
    L.append("|---|" + "---:|" * len(fields))
    for n in NAMES:
        cells = []
        for f in fields:
            v = [r["meminfo_kib"][f] for r in by[n] if f in r.get("meminfo_kib", {})]
            cells.append(fmt(median(v), 1, 0))
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("### Slowest units (`systemd-analyze blame`, first boot of each configuration)")
    L.append("")
    for n in NAMES:
        if by[n] and by[n][0].get("blame"):
            top = [" ".join(x.split()) for x in by[n][0]["blame"][:6]]
            L.append(f"- {n}: " + "; ".join(f"`{t}`" for t in top))
    L.append("")
    L.append("### Disk image and boot files (bytes)")
    L.append("")
    s = meta["sizes"]
    L.append("| artifact | peer | Keel | Keel / peer |")
    L.append("|---|---:|---:|---:|")
    rows = [
        ("qcow2 file (as shipped, `qemu-img convert -O qcow2`)", "peer_qcow2", "keel_qcow2"),
        ("qcow2 allocated on the host", "peer_qcow2_alloc", "keel_qcow2_alloc"),
        ("raw disk, virtual size", "peer_raw", "keel_raw"),
        ("raw disk, allocated on the host", "peer_raw_alloc", "keel_raw_alloc"),
        ("initramfs", "peer_initrd", "keel_initramfs"),
        ("kernel (vmlinuz)", "peer_kernel", "keel_kernel"),
    ]
    for title, p, kk in rows:
        L.append(f"| {title} | {s[p]:,} | {s[kk]:,} | {fmt(ratio(s[kk], s[p]), 1, 3)} |")
    L.append("")
    L.append("## How it was measured")
    L.append("")
    L.append("- Wall times: from just before QEMU is spawned to the end of the first `ssh core@127.0.0.1 "
             "true` that succeeds with the benchmark's key, and to the return of `systemctl "
             "is-system-running --wait` run right after it. The login is tried as soon as sshd's "
             "banner arrives on the forwarded port, watched with TCP probes (one a second while the guest has no address, QEMU's "
             "user network holds connections then; one at a time once the guest answers), so that "
             "neither slirp's SYN back-off nor a connect timeout is what gets measured; "
             "`tests/bench/peer/bench.py` explains the details.")
    L.append("- kernel start → switch_root: the \"(kernel)\" term of `systemd-analyze time`, the same "
             "method on both: neither initramfs runs systemd (Debian's is initramfs-tools, Keel's is "
             "keel-init), so systemd counts everything before it started in the real root as kernel "
             "time. keel-init's own console stamp (`keel-init: [ x.xxx] switching root`) is listed "
             "below as a cross-check; it is taken just before the switch, so it is a little lower.")
    L.append("- initramfs phase: that figure minus the kernel's `Run /init as init process` stamp "
             "(`dmesg`), i.e. the time the initramfs's own /init ran.")
    L.append("- multi-user: `systemctl show -p ActiveEnterTimestampMonotonic multi-user.target` "
             "(guest monotonic clock, from kernel start). The peer's multi-user.target does not wait "
             "for cloud-init's final stage; `is-system-running` does.")
    L.append("- memory: `MemTotal − MemAvailable` from `/proc/meminfo`, read over SSH right after "
             "`is-system-running --wait` returned.")
    L.append("- Every boot's hostname is checked to be the provisioned one (else the run fails); "
             "console logs are kept next to the raw data (`peers.json`).")
    kis = [r["keel_init_switch_root_s"] for r in results
           if r["config"] != "peer" and r.get("keel_init_switch_root_s") is not None]
    if kis:
        L.append(f"- keel-init's console stamp at switch_root (both Keel configurations): median "
                 f"{median(kis):.2f} s, {', '.join(f'{x:.2f}' for x in kis)}.")
    states = sorted({f"{r['config']}: {r['state']}" for r in results})
    L.append(f"- System state after boot: {'; '.join(states)}.")
    failed = sorted({f"{r['config']}: {u.split()[0]}" for r in results for u in r.get("failed_units", [])})
    if failed:
        L.append(f"- Failed units seen: {'; '.join(failed)}.")
    if meta.get("errors"):
        L.append("- **Boots that failed** (left out of the tables above): "
                 + "; ".join(meta["errors"]) + ".")
    L.append("")
    return "\n".join(L)


def svg_plot(results):
    """Bars of the medians per measure, each scaled to the peer's (stdlib SVG)."""
    plot = [("ssh_wall_s", "first SSH login (wall)"), ("kernel_s", "kernel → switch_root"),
            ("initramfs_s", "initramfs phase"), ("multi_user_s", "kernel → multi-user"),
            ("mem_used_kib", "memory used")]
    colors = {"peer": "#888888", "keel-cidata": "#2a6fb0", "keel-ignition": "#e08a1e"}
    row_h, bar_h, left, width = 54, 14, 190, 420
    h = 40 + row_h * len(plot) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 140}" height="{h}" '
           'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14">Keel / peer (median; peer = 1.0, shorter is better)</text>']
    for i, (k, title) in enumerate(plot):
        y0 = 40 + i * row_h
        out.append(f'<text x="10" y="{y0 + 26}">{title}</text>')
        meds = {n: median([r[k] for r in results if r["config"] == n and r.get(k) is not None])
                for n in NAMES}
        base = meds["peer"]
        if not base:
            continue
        for j, n in enumerate(NAMES):
            if meds[n] is None:
                continue
            rr = meds[n] / base
            w = min(rr, 1.5) / 1.5 * width
            y = y0 + j * (bar_h + 2)
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colors[n]}"/>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + 11}">{n} {rr:.2f}</text>')
    x1 = left + width / 1.5
    out.append(f'<line x1="{x1:.1f}" y1="32" x2="{x1:.1f}" y2="{h - 20}" stroke="#444" stroke-dasharray="3,3"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def host_meta(args):
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    qv = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "mem_gib": round(mem),
        "host_kernel": os.uname().release,
        "qemu": qv.splitlines()[0] if qv else "qemu",
        "load_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "runs": args.runs,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, required=True, help="Keel's build directory (read only)")
    ap.add_argument("--peer", type=Path, required=True, help="build-peer.sh's output directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("KEEL_BENCH_RUNS", "3")))
    ap.add_argument("--only", default="", help="comma-separated configurations (default: all)")
    ap.add_argument("--report-only", action="store_true",
                    help="re-render OUT/peers.md from OUT/peers.json without booting")
    args = ap.parse_args()
    if args.report_only:
        d = json.loads((args.out / "peers.json").read_text())
        d["meta"].setdefault("errors", d.get("errors", []))
        text = report(d["results"], d["meta"])
        (args.out / "peers.md").write_text(text)
        (args.out / "peers.svg").write_text(svg_plot(d["results"]))
        print(text)
        return
    meta = host_meta(args)
    work = args.out / "work"
    logs = args.out / "logs"
    work.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    key, iso, ign = make_inputs(work)
    cfgs, image, env = configs(args.build.resolve(), args.peer.resolve(), iso, ign)
    if args.only:
        cfgs = [c for c in cfgs if c["name"] in args.only.split(",")]
    results = []
    errors = []
    for i in range(1, args.runs + 1):
        for cfg in cfgs:
            try:
                results.append(boot_once(cfg, key, work, logs, i))
            except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                log(f"{cfg['name']} #{i} FAILED: {e}")
                errors.append(f"{cfg['name']} #{i}: {e}")
            (args.out / "peers.json").write_text(
                json.dumps({"meta": meta, "results": results, "errors": errors}, indent=1))
    meta["errors"] = errors
    meta["load_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    meta["cold"] = all(r["cold"] for r in results)
    meta["peer"] = env
    meta["peer_append"] = next(c for c in configs(args.build.resolve(), args.peer.resolve(), iso, ign)[0]
                               if c["name"] == "peer")["append"]
    meta["keel_version"] = image.get("version", "?")
    commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    meta["keel_commit"] = commit or "?"
    meta["keel_built"] = datetime.datetime.fromtimestamp(
        (args.build / "image.json").stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta["qemu_common"] = ("qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m 1024 -nodefaults "
                           "-kernel K -initrd I -append A -drive if=virtio,format=qcow2 "
                           "-netdev user -device virtio-net-pci -device virtio-rng-pci -serial file")
    b = args.build.resolve()
    p = args.peer.resolve()
    sizes = {}
    for prefix, q, raw, initrd, kernel in [
        ("peer", p / "peer.qcow2", p / "peer.raw", p / "initrd.img", p / "vmlinuz"),
        ("keel", b / image["qcow2"], b / image["raw"], b / image["initramfs"], b / image["kernel"]),
    ]:
        sizes[f"{prefix}_qcow2"] = file_sizes(q)["bytes"]
        sizes[f"{prefix}_qcow2_alloc"] = file_sizes(q)["allocated"]
        sizes[f"{prefix}_raw"] = file_sizes(raw)["bytes"]
        sizes[f"{prefix}_raw_alloc"] = file_sizes(raw)["allocated"]
        sizes[f"{prefix}_{'initrd' if prefix == 'peer' else 'initramfs'}"] = file_sizes(initrd)["bytes"]
        sizes[f"{prefix}_kernel"] = file_sizes(kernel)["bytes"]
    meta["sizes"] = sizes
    same = (p / "vmlinuz").read_bytes() == (b / image["kernel"]).read_bytes()
    meta["same_kernel"] = (f"{env.get('KERNEL_PACKAGE')} ({image.get('kernel_release')}); the peer's "
                           f"/boot/vmlinuz is {'byte-identical to' if same else 'DIFFERENT from'} Keel's")
    (args.out / "peers.json").write_text(
        json.dumps({"meta": meta, "results": results, "errors": errors}, indent=1))
    text = report(results, meta)
    (args.out / "peers.md").write_text(text)
    (args.out / "peers.svg").write_text(svg_plot(results))
    print(text)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
