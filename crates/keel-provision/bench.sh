#!/usr/bin/env bash
# keel-provision benchmark: provisioning a 50-file config into a temp
# sysroot (issue 6 target: <= 100 ms), against cloud-init -- the peer the
# seeds provisioned with -- doing the same writes and the same validation.
#
#   bash crates/keel-provision/bench.sh OUTDIR
#
# Rows (median of $RUNS runs each):
#   - keel: `keel-provision apply` of an Ignition config and of the
#     equivalent cloud-config (50 files, the core user's SSH key, one enabled
#     unit), as whole processes, and the library's own time (duration_us in
#     the result file: what keel-init spends in the initramfs);
#   - cloud-init: its write_files module (cc_write_files.write_files) writing
#     the same 50 files, timed inside Python around the call and as a whole
#     process; `cloud-init schema --config-file` vs `keel-provision validate`.
# Needs: the musl release build of keel-provision (built here), and the
# Debian package cloud-init for the peer rows (skipped with a note without it).
set -euo pipefail
out=${1:?usage: bench.sh OUTDIR}
mkdir -p "$out"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
RUNS=${RUNS:-15}
TARGET=x86_64-unknown-linux-musl
tdir=${CARGO_TARGET_DIR:-$top/target}
(cd "$top" && cargo build --release --target "$TARGET" -p keel-provision >&2)
bin=$tdir/$TARGET/release/keel-provision
export KEEL_LOG=warn

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q bench@keel"
unit='[Unit]\nDescription=bench\n[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n'
# 50 files of ~1 KiB each, in 5 directories, mode 0644, half owned by core
python3 - "$work" "$key" "$unit" <<'PY'
import json, sys, base64, os
work, key, unit = sys.argv[1], sys.argv[2], sys.argv[3].encode().decode('unicode_escape')
body = lambda i: (f"# file {i}\n" + "x" * 1000 + "\n")
files = []
cc = ["#cloud-config", "ssh_authorized_keys:", f"  - {key}", "write_files:"]
peer = []
for i in range(50):
    path = f"/etc/bench/d{i % 5}/file{i}.conf"
    data = body(i)
    f = {"path": path, "mode": 420, "contents": {"source": "data:;base64," + base64.b64encode(data.encode()).decode()}}
    if i % 2:
        f["user"] = {"name": "core"}
        f["group"] = {"name": "core"}
    files.append(f)
    cc += [f"  - path: {path}", "    permissions: '0644'", "    encoding: b64",
           f"    content: {base64.b64encode(data.encode()).decode()}"]
    peer.append({"path": path, "permissions": "0644", "encoding": "b64",
                 "content": base64.b64encode(data.encode()).decode()})
ign = {"ignition": {"version": "3.4.0"},
       "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [key]}]},
       "storage": {"files": files},
       "systemd": {"units": [{"name": "bench.service", "enabled": True, "contents": unit}]}}
cc += ["coreos:", "  units:", "    - name: bench.service", "      enable: true", "      content: |"]
cc += ["        " + l for l in unit.splitlines()]
open(os.path.join(work, "bench.ign"), "w").write(json.dumps(ign))
open(os.path.join(work, "bench.yaml"), "w").write("\n".join(cc) + "\n")
json.dump(peer, open(os.path.join(work, "peer.json"), "w"))
PY

fresh_root() {
  rm -rf "$work/root" "$work/run"
  mkdir -p "$work/root/etc" "$work/root/usr/lib/sysusers.d" "$work/root/var" "$work/run"
  printf 'root:x:0:0:root:/root:/bin/bash\n' >"$work/root/etc/passwd"
  printf 'root:x:0:\n' >"$work/root/etc/group"
  printf 'root:*:19000:0:99999:7:::\n' >"$work/root/etc/shadow"
  printf 'u core 500 "Core user" /home/core /bin/bash\n' >"$work/root/usr/lib/sysusers.d/keel.conf"
}

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms() { awk -v ns="$1" 'BEGIN {printf "%.2f", ns/1e6}'; }

# keel: whole process (wall) and the library's own time (duration_us)
keel_apply() { # file -> "wall_ns lib_us" per run, on stdout
  local f=$1 i t0 t1
  for ((i = 0; i < RUNS; i++)); do
    fresh_root
    t0=$(now_ns)
    "$bin" apply --sysroot "$work/root" --run "$work/run" "$f" >"$work/report.json"
    t1=$(now_ns)
    test "$(find "$work/root/etc/bench" -type f | wc -l)" = 50 || { echo "bench: keel wrote the wrong files" >&2; exit 1; }
    echo "$((t1 - t0)) $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["duration_us"])' "$work/report.json")"
  done
}
keel_apply "$work/bench.ign" >"$work/ign.txt"
keel_apply "$work/bench.yaml" >"$work/cc.txt"
ign_wall=$(cut -d' ' -f1 "$work/ign.txt" | median)
ign_lib=$(($(cut -d' ' -f2 "$work/ign.txt" | median | cut -d. -f1) * 1000))
cc_wall=$(cut -d' ' -f1 "$work/cc.txt" | median)
cc_lib=$(($(cut -d' ' -f2 "$work/cc.txt" | median | cut -d. -f1) * 1000))

keel_validate() {
  local i t0
  for ((i = 0; i < RUNS; i++)); do
    t0=$(now_ns)
    "$bin" validate "$work/bench.yaml" >/dev/null
    echo $(($(now_ns) - t0))
  done | median
}
kv=$(keel_validate)

peer=no
if command -v cloud-init >/dev/null && /usr/bin/python3 -c 'import cloudinit.config.cc_write_files' 2>/dev/null; then
  peer=yes
  peer_write() { # -> "wall_ns inproc_ns"
    local i t0 t1 inproc
    for ((i = 0; i < RUNS; i++)); do
      rm -rf "$work/peer"
      mkdir -p "$work/peer"
      t0=$(now_ns)
      inproc=$(/usr/bin/python3 - "$work/peer" "$work/peer.json" <<'PY'
import json, sys, time, logging
logging.disable(logging.CRITICAL)
from cloudinit.config.cc_write_files import write_files
root, spec = sys.argv[1], json.load(open(sys.argv[2]))
for f in spec:
    f["path"] = root + f["path"]
t = time.perf_counter_ns()
write_files("write_files", spec, "root:root")
print(time.perf_counter_ns() - t)
PY
)
      t1=$(now_ns)
      test "$(find "$work/peer" -type f | wc -l)" = 50 || { echo "bench: cloud-init wrote the wrong files" >&2; exit 1; }
      echo "$((t1 - t0)) $inproc"
    done
  }
  peer_write >"$work/peer.txt"
  pw_wall=$(cut -d' ' -f1 "$work/peer.txt" | median)
  pw_in=$(cut -d' ' -f2 "$work/peer.txt" | median)
  pv=$(for ((i = 0; i < RUNS; i++)); do
    t0=$(now_ns)
    cloud-init schema --config-file "$work/bench.yaml" >/dev/null 2>&1 || true
    echo $(($(now_ns) - t0))
  done | median)
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1fx", b/a}'; }
size=$(stat -c %s "$bin")
{
  echo "### keel-provision: 50-file first-boot config (median of $RUNS runs)"
  echo
  echo "| what | keel-provision | cloud-init 22.4 (peer) | peer / keel |"
  echo "|---|---|---|---|"
  if [ $peer = yes ]; then
    echo "| write 50 files, in-process time (keel: Ignition, whole provisioning) | $(ms "$ign_lib") ms | $(ms "$pw_in") ms (write_files only) | $(ratio "$ign_lib" "$pw_in") |"
    echo "| write 50 files, in-process time (keel: cloud-config, whole provisioning) | $(ms "$cc_lib") ms | $(ms "$pw_in") ms (write_files only) | $(ratio "$cc_lib" "$pw_in") |"
    echo "| whole process, cloud-config (keel: apply; peer: python3 + write_files) | $(ms "$cc_wall") ms | $(ms "$pw_wall") ms | $(ratio "$cc_wall" "$pw_wall") |"
    echo "| validate the cloud-config (keel validate vs cloud-init schema) | $(ms "$kv") ms | $(ms "$pv") ms | $(ratio "$kv" "$pv") |"
  else
    echo "| whole provisioning, Ignition (library time) | $(ms "$ign_lib") ms | not installed (apt-get install cloud-init) | - |"
    echo "| whole provisioning, cloud-config (library time) | $(ms "$cc_lib") ms | - | - |"
    echo "| validate the cloud-config | $(ms "$kv") ms | - | - |"
  fi
  echo "| whole process, Ignition (keel apply) | $(ms "$ign_wall") ms | | |"
  echo
  echo "keel's time is the whole provisioning (parse, plan, accounts, 50 files, unit, syncfs of ROOT, fsynced result and marker); cloud-init's write_files writes the files only, without syncing."
  echo
  echo "Target (issue 6): provisioning <= 100 ms for a 50-file config: $( [ "$ign_lib" -le 100000000 ] && echo met || echo MISSED ) ($(ms "$ign_lib") ms)."
  echo "keel-provision static binary: $size bytes ($TARGET, release)."
} | tee "$out/keel-provision.md"
