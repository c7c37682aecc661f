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
once the system is running; the kernel's memory floor (the same kernel and
QEMU settings booting a trivial busybox initramfs that prints /proc/meminfo,
once per round) and each system's memory above it; and a boot profile
(issue 21): the median boot of each configuration split into consecutive
phases (kernel, keel-init's steps from /run/keel/boot.json, systemd's
generator and unit-loading stamps, its first unit, SSH listening, banner,
login) with `systemd-analyze plot` of that boot. Writes OUT/peers.json,
OUT/peers.md, OUT/peers.svg, OUT/boot-profile.svg, OUT/boot-plot-*.svg.

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
# A busy host (other QEMU guests on the same cores) can push a TCG first boot
# past 300 s; KEEL_BENCH_SSH_TIMEOUT raises the bound.
SSH_TIMEOUT = int(os.environ.get("KEEL_BENCH_SSH_TIMEOUT", "300"))
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


# --- the kernel's memory floor ------------------------------------------------

FLOOR_INIT = """#!/bin/busybox sh
# The kernel's own memory floor (issue 21): nothing but this script runs.
/bin/busybox mount -t proc proc /proc
/bin/busybox sleep 2
/bin/busybox awk '{ sub(":", "", $1); print "KEEL-FLOOR " $1 " " $2 }' /proc/meminfo
echo KEEL-FLOOR-END
/bin/busybox poweroff -f
"""


def newc(entries):
    """A newc cpio archive of (name, mode, data, rdev) entries (stdlib only)."""
    out = bytearray()

    def pad():
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries + [("TRAILER!!!", 0, b"", (0, 0))], 1):
        nm = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nm), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + nm)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def make_floor_initrd(work):
    """A trivial initramfs: static busybox and FLOOR_INIT, reporting /proc/meminfo."""
    busybox = Path("/bin/busybox").read_bytes()  # busybox-static (./run's DEBS)
    entries = [
        ("bin", 0o040755, b"", (0, 0)),
        ("dev", 0o040755, b"", (0, 0)),
        ("dev/console", 0o020600, b"", (5, 1)),
        ("proc", 0o040755, b"", (0, 0)),
        ("bin/busybox", 0o100755, busybox, (0, 0)),
        ("init", 0o100755, FLOOR_INIT.encode(), (0, 0)),
    ]
    initrd = work / "floor.cpio"
    initrd.write_bytes(newc(entries))
    disk = work / "floor.qcow2"
    disk.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"])
    return initrd, disk


def floor_once(kernel, initrd, disk, logs, run_no):
    """Boot the same kernel under the same QEMU settings into FLOOR_INIT."""
    console = logs / f"floor-{run_no}.log"
    console.unlink(missing_ok=True)
    cfg = {"kernel": kernel, "initrd": initrd, "append": CONSOLE_ARGS, "extra": []}
    cmd = qemu_command(cfg, disk, free_port(), console)
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=300)
    text = console.read_text(errors="replace") if console.exists() else ""
    mem = {k: int(v) for k, v in re.findall(r"KEEL-FLOOR (\w+(?:\(\w+\))?) (\d+)", text)}
    if "MemTotal" not in mem or "MemAvailable" not in mem:
        raise RuntimeError(f"floor #{run_no}: no meminfo on the console ({console})")
    log(f"floor #{run_no}: used {mem['MemTotal'] - mem['MemAvailable']} KiB")
    return {"config": "floor", "run": run_no, "mem_total_kib": mem["MemTotal"],
            "mem_used_kib": mem["MemTotal"] - mem["MemAvailable"], "meminfo_kib": mem}


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
echo "=== sshd"; for u in sshd.socket ssh.service; do
  systemctl show -p Id -p ActiveState -p ActiveEnterTimestampMonotonic "$u"; done
echo "=== manager"; systemctl show -p UserspaceTimestampMonotonic -p GeneratorsStartTimestampMonotonic \
  -p GeneratorsFinishTimestampMonotonic -p UnitsLoadStartTimestampMonotonic \
  -p UnitsLoadFinishTimestampMonotonic
echo "=== firstunit"; sudo -n journalctl -b -o short-monotonic --no-pager -t systemd 2>/dev/null \
  | grep -m1 -E ' systemd\[1\]: (Started|Finished|Reached target|Listening on|Mounted|Set up automount) '
echo "=== presetlines"; sudo -n journalctl -b -o cat --no-pager -t systemd 2>/dev/null \
  | grep -c -e 'Populated /etc with preset unit settings' -e 'Detected first boot'
echo "=== userman"; systemctl show -p ActiveEnterTimestampMonotonic -p InactiveExitTimestampMonotonic "user@$(id -u).service"
echo "=== bootjson"; cat /run/keel/boot.json 2>/dev/null | tr -d '\n'; echo
echo "=== blame"; systemd-analyze blame 2>&1 | head -n 12
echo "=== chain"; u=sshd.socket; systemctl is-active -q sshd.socket || u=ssh.service
  systemd-analyze critical-chain "$u" 2>&1 | head -n 25
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
    # SSH listening: Keel's sshd.socket (socket-activated, as on CoreOS) or
    # the peer's ssh.service (Type=notify: active once sshd listens), the
    # first of the two that became active.
    units, cur = {}, {}
    for line in sec.get("sshd", []):
        k, _, v = line.partition("=")
        cur[k] = v
        if k == "ActiveEnterTimestampMonotonic":
            units[cur.get("Id", "?")] = (cur.get("ActiveState"), int(v or 0))
            cur = {}
    r["sshd_active_s"], r["ssh_unit"] = None, None
    for u in ("sshd.socket", "ssh.service"):
        state, ts = units.get(u, (None, 0))
        if state == "active" and ts > 0:
            r["sshd_active_s"], r["ssh_unit"] = ts / 1e6, u
            break
    mgr = {}
    for line in sec.get("manager", []):
        k, _, v = line.partition("=")
        if v.isdigit() and int(v) > 0:
            mgr[k.replace("TimestampMonotonic", "")] = int(v) / 1e6
    r["manager"] = mgr
    m = re.search(r"^\[\s*([\d.]+)\]", " ".join(sec.get("firstunit", [])).strip())
    r["first_unit_s"] = float(m.group(1)) if m else None
    r["first_unit"] = " ".join(sec.get("firstunit", [])).strip()
    pl = " ".join(sec.get("presetlines", [])).strip()
    r["first_boot_lines"] = int(pl) if pl.isdigit() else None
    um = {}
    for line in sec.get("userman", []):
        k, _, v = line.partition("=")
        if v.isdigit() and int(v) > 0:
            um[k] = int(v) / 1e6
    r["user_manager_s"] = (um["ActiveEnterTimestampMonotonic"] - um["InactiveExitTimestampMonotonic"]
                           if len(um) == 2 else None)
    try:
        r["boot_json"] = json.loads(" ".join(sec.get("bootjson", [])) or "null")
    except ValueError:
        r["boot_json"] = None
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
        # Where the guest's clock starts on the wall clock: its uptime read
        # after the system is running (the end of that ssh is at most a little
        # after the read), so QEMU start -> kernel start ~ t_end - uptime.
        r = subprocess.run(ssh_cmd(key, port, "cat /proc/uptime", 30), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        t_end = time.monotonic() - t0
        try:
            result["kernel_start_wall_s"] = t_end - float(r.stdout.split()[0])
        except (IndexError, ValueError):
            result["kernel_start_wall_s"] = None
        r = subprocess.run(ssh_cmd(key, port, PROBE, 30), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        result.update(parse_probe(r.stdout))
        # The boot's own picture, kept for the median boot's report.
        plot = logs / f"{name}-{run_no}.plot.svg"
        with open(plot, "w") as f:
            subprocess.run(ssh_cmd(key, port, "systemd-analyze plot", 30), stdin=subprocess.DEVNULL,
                           stdout=f, stderr=subprocess.DEVNULL, timeout=120)
        result["plot"] = plot.name if plot.stat().st_size > 0 else None
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
    ("sshd_active_s", "kernel start → SSH listening (guest: Keel's sshd.socket, the peer's ssh.service active)",
     "s", 1, 1),
    ("kernel_s", "kernel start → switch_root (guest, systemd-analyze \"kernel\")", "s", 1, 2),
    ("initramfs_s", "initramfs phase: `Run /init` → switch_root (guest)", "s", 1, 2),
    ("multi_user_s", "kernel start → multi-user.target (guest)", "s", 1, 1),
    ("running_wall_s", "QEMU start → `is-system-running` done (wall)", "s", 1, 1),
    ("mem_used_kib", "memory used once running (MemTotal − MemAvailable)", "MiB", 1 / 1024, 1),
    ("mem_above_floor_kib", "memory used once running, above the kernel's floor (median floor subtracted)",
     "MiB", 1 / 1024, 1),
]

TARGETS = [
    # key, target ratio, words
    ("ssh_wall_s", 0.25, "first boot to SSH ≤ 0.25 × peer"),
    ("initramfs_s", 0.2, "initramfs phase ≤ 0.2 × peer"),
    ("mem_used_kib", 0.6, "memory after boot ≤ 0.6 × peer (issue 8)"),
    ("mem_above_floor_kib", 0.6, "memory above the kernel's floor ≤ 0.6 × peer (issue 21)"),
]

NAMES = ["peer", "keel-cidata", "keel-ignition"]


def fmt(v, scale=1, dec=1):
    return "n/a" if v is None else f"{v * scale:.{dec}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


# The boot profile (issue 21): consecutive phases of the median boot, from
# QEMU start to the end of the first SSH login, on one clock (the guest's
# monotonic clock shifted by where the kernel started on the wall clock).
KEEL_INIT_STEPS = ["start", "modules", "disk", "root", "growth", "usr", "etc", "provision", "switch_root"]
PHASE_COLORS = {
    "firmware": "#bbbbbb", "kernel": "#7f7f7f", "initramfs": "#2a6fb0", "systemd": "#d62728",
    "units": "#e08a1e", "ssh": "#2ca02c", "login": "#9467bd",
}


def median_run(rs):
    """The boot whose first SSH login is the median one (the lower for an even count)."""
    rs = sorted((r for r in rs if r.get("ssh_wall_s") is not None), key=lambda r: r["ssh_wall_s"])
    return rs[(len(rs) - 1) // 2] if rs else None


def profile(r):
    """[(phase, kind, seconds)] for one boot; None where a stamp is missing."""
    def d(a, b):
        return None if a is None or b is None else b - a
    mgr = r.get("manager") or {}
    k0 = r.get("kernel_start_wall_s")
    listen = r.get("sshd_active_s")
    rows = [
        ("QEMU start → kernel start (firmware, kernel load; ≈ wall − uptime)", "firmware", k0),
        ("kernel start → `/init` (kernel init, built-in drivers)", "kernel", r.get("run_init_s")),
        ("`/init` → switch_root (initramfs)", "initramfs", r.get("initramfs_s")),
    ]
    t = (r.get("boot_json") or {}).get("timings") or {}
    steps = [k for k in KEEL_INIT_STEPS if k in t]
    for a, b in zip(steps, steps[1:]):
        rows.append((f"  keel-init: {a} → {b}", None, t[b] - t[a]))
    rows += [
        ("switch_root → systemd's generators start (systemd loads, sets up)", "systemd",
         d(r.get("kernel_s"), mgr.get("GeneratorsStart"))),
        ("generators", "systemd", d(mgr.get("GeneratorsStart"), mgr.get("GeneratorsFinish"))),
        ("generators done → unit loading (first-boot preset-all runs here)", "systemd",
         d(mgr.get("GeneratorsFinish"), mgr.get("UnitsLoadStart"))),
        ("loading units", "systemd", d(mgr.get("UnitsLoadStart"), mgr.get("UnitsLoadFinish"))),
        ("units loaded → first unit done", "systemd", d(mgr.get("UnitsLoadFinish"), r.get("first_unit_s"))),
        ("first unit → SSH listening (critical chain below)", "units", d(r.get("first_unit_s"), listen)),
        ("SSH listening → sshd's banner on the host (network up, sshd start)", "ssh",
         None if k0 is None or listen is None or r.get("banner_wall_s") is None
         else r["banner_wall_s"] - k0 - listen),
        ("banner → first login done (key exchange, PAM, user manager)", "login",
         d(r.get("banner_wall_s"), r.get("ssh_wall_s"))),
    ]
    return rows


def timeline_svg(meds):
    """Stacked bars of the median boots' phases (stdlib SVG)."""
    left, width, bar_h, gap = 120, 620, 22, 14
    total = max((r["ssh_wall_s"] for r in meds.values() if r), default=1)
    h = 50 + len(meds) * (bar_h + gap) + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{h}" '
           'font-family="sans-serif" font-size="12">',
           '<text x="10" y="20" font-size="14">First boot, QEMU start → first SSH login '
           '(median boot of each configuration, s)</text>']
    scale = width / total
    for i, (name, r) in enumerate(meds.items()):
        y = 40 + i * (bar_h + gap)
        out.append(f'<text x="10" y="{y + 15}">{name}</text>')
        if not r:
            continue
        x = left
        for phase, kind, sec in profile(r):
            if kind is None or sec is None or sec <= 0:
                continue
            w = sec * scale
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                       f'fill="{PHASE_COLORS[kind]}"><title>{phase}: {sec:.2f} s</title></rect>')
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + 15}">{r["ssh_wall_s"]:.1f}</text>')
    ya = 40 + len(meds) * (bar_h + gap)
    step = 5 if total <= 60 else 10
    for sec in range(0, int(total) + 1, step):
        xa = left + sec * scale
        out.append(f'<line x1="{xa:.1f}" y1="{ya - gap}" x2="{xa:.1f}" y2="{ya - gap + 4}" stroke="#444"/>')
        out.append(f'<text x="{xa - 4:.1f}" y="{ya + 4}" font-size="10">{sec}</text>')
    lx = 10
    for kind, label in [("firmware", "QEMU/firmware"), ("kernel", "kernel"), ("initramfs", "initramfs"),
                        ("systemd", "systemd before its first unit"), ("units", "units to SSH"),
                        ("ssh", "network + sshd"), ("login", "login")]:
        out.append(f'<rect x="{lx}" y="{ya + 20}" width="10" height="10" fill="{PHASE_COLORS[kind]}"/>')
        out.append(f'<text x="{lx + 14}" y="{ya + 29}" font-size="11">{label}</text>')
        lx += 14 + 7 * len(label) + 12
    out.append("</svg>")
    return "\n".join(out) + "\n"


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
    L.append("## Targets (issues 8 and 21)")
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
    floor = meta.get("floor") or []
    if floor:
        fu = [f["mem_used_kib"] for f in floor]
        L.append(f"The kernel's floor: the same kernel and QEMU settings booting a trivial initramfs "
                 f"(static busybox reporting `/proc/meminfo`, nothing else runs) use "
                 f"{median(fu) / 1024:.1f} MiB (MemTotal − MemAvailable; "
                 f"{', '.join(f'{x / 1024:.1f}' for x in fu)}); MemTotal {floor[0]['mem_total_kib']:,} KiB. "
                 "Most of it is the kernel's reserve (watermarks), not pages in use: MemFree − MemAvailable "
                 f"is {median([f['meminfo_kib'].get('MemFree', 0) - f['meminfo_kib'].get('MemAvailable', 0) for f in floor]) / 1024:.1f} MiB there.")
        L.append("")
    meds = {n: median_run(by[n]) for n in NAMES}
    L.append("## Where the time goes: the median first boot of each configuration")
    L.append("")
    L.append("![boot timeline](bench-boot-profile.svg)")
    L.append("")
    L.append("Consecutive phases, seconds (guest monotonic clock, placed on the wall clock by the "
             "guest's uptime read over SSH once it runs). systemd's own stamps: `UserspaceTimestamp` "
             "(its start after switch_root), `GeneratorsStart/Finish`, `UnitsLoadStart/Finish`; the first "
             "unit is PID 1's first `Started/Finished/Reached target/Listening on/Mounted` journal line. "
             "`systemd-analyze plot` of the median boot: "
             + ", ".join(f"[{n}](bench-boot-plot-{n}.svg)" for n in NAMES if meds[n] and meds[n].get("plot"))
             + ".")
    L.append("")
    L.append("| phase | " + " | ".join(f"{n} (#{meds[n]['run']})" if meds[n] else n for n in NAMES) + " |")
    L.append("|---|" + "---:|" * len(NAMES))
    profs = {n: profile(meds[n]) if meds[n] else [] for n in NAMES}
    # Keel's profiles carry keel-init's steps too: their order is the table's.
    phases = [ph for ph, _, _ in max(profs.values(), key=len)]
    for ph in phases:
        cells = []
        for n in NAMES:
            v = next((sec for p2, _, sec in profs[n] if p2 == ph), None)
            cells.append(fmt(v, 1, 2) if ph in [p2 for p2, _, _ in profs[n]] else "")
        L.append(f"| {ph} | " + " | ".join(cells) + " |")
    L.append("| **QEMU start → first SSH login** | " + " | ".join(
        f"**{fmt(meds[n]['ssh_wall_s'], 1, 2)}**" if meds[n] else "n/a" for n in NAMES) + " |")
    L.append("| SSH unit | " + " | ".join(
        f"`{meds[n].get('ssh_unit')}`" if meds[n] else "" for n in NAMES) + " |")
    L.append("| systemd's own first-boot lines (`Detected first boot`, `Populated /etc with preset…`) | "
             + " | ".join(fmt(meds[n].get("first_boot_lines"), 1, 0) if meds[n] else "" for n in NAMES) + " |")
    L.append("| the user manager (`user@UID.service`, started by the first login) | " + " | ".join(
        fmt(meds[n].get("user_manager_s"), 1, 2) if meds[n] else "" for n in NAMES) + " |")
    L.append("")
    for n in NAMES:
        if meds[n] and meds[n].get("critical_chain"):
            L.append(f"<details><summary>{n}: critical chain to {meds[n].get('ssh_unit')}</summary>")
            L.append("")
            L.append("```")
            L.extend(meds[n]["critical_chain"])
            L.append("```")
            L.append("</details>")
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
            ("mem_used_kib", "memory used"), ("mem_above_floor_kib", "memory above the floor")]
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


def write_outputs(out, results, meta):
    """peers.md, peers.svg, the timeline and the median boots' plots."""
    fl = [f["mem_used_kib"] for f in meta.get("floor") or []]
    for r in results:
        r["mem_above_floor_kib"] = (r["mem_used_kib"] - median(fl)
                                    if fl and r.get("mem_used_kib") is not None else None)
    text = report(results, meta)
    (out / "peers.md").write_text(text)
    (out / "peers.svg").write_text(svg_plot(results))
    meds = {n: median_run([r for r in results if r["config"] == n]) for n in NAMES}
    (out / "boot-profile.svg").write_text(timeline_svg(meds))
    for n, r in meds.items():
        src = out / "logs" / r["plot"] if r and r.get("plot") else None
        if src and src.exists():
            shutil.copyfile(src, out / f"boot-plot-{n}.svg")
    print(text)


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
        write_outputs(args.out, d["results"], d["meta"])
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
    floors = []
    floor_initrd, floor_disk = make_floor_initrd(work)
    meta["floor"] = floors
    for i in range(1, args.runs + 1):
        try:
            floors.append(floor_once(cfgs[0]["kernel"], floor_initrd, floor_disk, logs, i))
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            log(f"floor #{i} FAILED: {e}")
            errors.append(f"floor #{i}: {e}")
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
    write_outputs(args.out, results, meta)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
