#!/usr/bin/env bash
# keel-lock benchmarks (called by `./run bench` with an output directory):
# lock acquire/release latency of the etcd v3 client against a local etcd
# (Debian's etcd-server, started here on loopback with a temporary data
# dir, killed at the end), with a bare read of the same key as the floor;
# and a fleet simulation: N `keel-lock lock --wait` agents, semaphore max M,
# each holding the lock for a fake reboot of R seconds, total rollout time
# against the ideal ceil(N/M) × R. Writes keel-lock.md.
set -euo pipefail
out=${1:-$(mktemp -d)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target}
mkdir -p "$out"
N=${KEEL_LOCK_BENCH_AGENTS:-50}
M=${KEEL_LOCK_BENCH_MAX:-5}
R=${KEEL_LOCK_BENCH_REBOOT_SECS:-2}
ROUNDS=${KEEL_LOCK_BENCH_ROUNDS:-300}
command -v etcd >/dev/null || { echo "bench.sh: etcd missing (apt-get install etcd-server)" >&2; exit 1; }
# The shipped build: static musl.
target=x86_64-unknown-linux-musl
cargo build --release --quiet --target $target -p keel-lock --bin keel-lock --example lock_bench
rel=$CARGO_TARGET_DIR/$target/release
work=$(mktemp -d "${TMPDIR:-/var/tmp}/keel-lock-bench.XXXXXX")
etcd_pid=
cleanup() {
  [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(port) pport=$(port)
ep=http://127.0.0.1:$cport
etcd --name bench --data-dir "$work/data" \
  --listen-client-urls "$ep" --advertise-client-urls "$ep" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "bench=http://127.0.0.1:$pport" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 100); do "$rel/keel-lock" --endpoints "$ep" status >/dev/null 2>&1 && break; sleep 0.1; done

fleet() {
  local log=$work/fleet.log start end i
  : >"$log"
  "$rel/keel-lock" --endpoints "$ep" --group fleet set-max "$M" >/dev/null
  start=$(date +%s.%N)
  for i in $(seq -w 1 "$N"); do
    (
      kl=("$rel/keel-lock" --endpoints "$ep" --group fleet --backoff-initial-ms 100 --backoff-max-ms 1000)
      KEEL_LOG=error "${kl[@]}" lock --wait "agent$i" >/dev/null
      echo "start $(date +%s.%N)" >>"$log"
      sleep "$R"
      echo "end $(date +%s.%N)" >>"$log"
      KEEL_LOG=error "${kl[@]}" unlock "agent$i" >/dev/null
    ) &
  done
  wait
  end=$(date +%s.%N)
  python3 - "$log" "$start" "$end" "$N" "$M" "$R" <<'PY'
import math, sys
log, start, end, n, m, r = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
ev = sorted((float(t), 1 if k == "start" else -1) for k, t in (l.split() for l in open(log)))
cur = most = 0
for _, d in ev:
    cur += d; most = max(most, cur)
starts = sum(1 for _, d in ev if d == 1)
ideal = math.ceil(n / m) * r
total = end - start
print(f"| {n} agents, max {m}, fake reboot {r:g} s | {total:.1f} s | {ideal:.1f} s | {total/ideal:.2f} | {most} | {starts}/{n} |")
PY
}

{
  echo "## keel-lock ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(uname -r), $(etcd --version | head -1))"
  echo
  echo "Lock latency, one client, local etcd over the HTTP/JSON gateway (ms):"
  echo
  echo "| operation | rounds | mean | p50 | p95 | p99 |"
  echo "|---|---|---|---|---|---|"
  "$rel/examples/lock_bench" "$ep" "$ROUNDS"
  echo
  echo "Fleet simulation (agents are \`keel-lock lock --wait\` processes with backoff 0.1–1 s):"
  echo
  echo "| run | rollout | ideal ceil(N/max) × reboot | ratio | most holders at once | got the lock |"
  echo "|---|---|---|---|---|---|"
  fleet
  echo
  echo "keel-lock binary (static musl, stripped): $(stat -c %s "$rel/keel-lock") bytes. Each lock change is a read and a compare-and-swap transaction (two round trips; etcd fsyncs the write). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
} | tee "$out/keel-lock.md"
