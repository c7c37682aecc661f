#!/usr/bin/env bash
# Foundation benchmark (issue 2): boots the built image N times headless and
# reports guest time from kernel start to switch_root (keel-init's own
# CLOCK_BOOTTIME stamp on the console), wall time to SSH and to a running
# system, plus artifact sizes against Debian's stock initramfs and the warm
# image build time. Called by `./run bench` with an output directory.
set -euo pipefail
out=${1:-build/bench}
runs=${KEEL_BENCH_RUNS:-3}
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${KEEL_BUILD_DIR:-$top/build}
mkdir -p "$out"
cd "$top"
cargo build --release -q -p keel-tests --bin keel-vm

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
sr=() ssh=() ready=()
for i in $(seq "$runs"); do
  log=$(target/release/keel-vm --build "$build" --wait 2>&1 | tee /dev/stderr | grep "is up:")
  ssh+=("$(sed -n 's/.*SSH after \([0-9.]*\)s.*/\1/p' <<<"$log")")
  ready+=("$(sed -n 's/.* after \([0-9.]*\)s (wall.*/\1/p' <<<"$log")")
  sr+=("$(sed -n 's/^keel-init: \[ *\([0-9.]*\)\] switching root.*/\1/p' "$build/vm-logs/keel-vm.log" | tail -1)")
done
peer=$(ls "$build"/work/tree/boot/initrd.img-* 2>/dev/null | head -1 || true)
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
j() { python3 -c "import json,sys; m=json.load(open('$build/image.json')); print($1)"; }
initramfs=$(j "m['sizes']['initramfs']")
peer_size=$(size "${peer:-/nonexistent}")
{
  echo "## Foundation ($(date -u +%F), $(nproc) cores, QEMU TCG, $runs boots)"
  echo
  echo "| measure | median | runs | target |"
  echo "|---|---:|---|---|"
  echo "| kernel start → switch_root (guest s) | $(printf '%s\n' "${sr[@]}" | median) | ${sr[*]} | ≤ 1.5 |"
  echo "| QEMU start → SSH (wall s) | $(printf '%s\n' "${ssh[@]}" | median) | ${ssh[*]} | |"
  echo "| QEMU start → system running (wall s) | $(printf '%s\n' "${ready[@]}" | median) | ${ready[*]} | |"
  echo
  echo "| artifact | bytes | peer | ratio |"
  echo "|---|---:|---:|---:|"
  echo "| initramfs (zstd cpio) | $initramfs | Debian stock initrd $peer_size | $(python3 -c "print(round($initramfs/max($peer_size,1),3))") |"
  echo "| USR (EROFS lz4hc) | $(j "m['sizes']['usr_erofs']") | | |"
  echo "| qcow2 image | $(j "m['sizes']['qcow2']") | | |"
  j "'\n'.join('| %s | %d | | |' % (k, v) for k, v in sorted(m['sizes'].items()) if k.startswith('bin/'))"
  echo
  echo "Image build steps of the last build (s): $(j "', '.join('%s %.1f' % (n, t) for n, t in m['steps'])")"
} | tee "$out/foundation.md"
