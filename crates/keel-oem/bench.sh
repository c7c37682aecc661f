#!/usr/bin/env bash
# keel-oem benchmarks (called by `./run bench` with an output directory):
# runner overhead per hook (spawn to exit of /bin/true) against a plain
# fork+exec of /bin/true, and the generator's run time against
# systemd-getty-generator, measured in the same run. Writes keel-oem.md.
set -euo pipefail
out=${1:-$(mktemp -d)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target}
mkdir -p "$out"
# The shipped build: static musl (startup cost differs a lot from glibc's).
target=x86_64-unknown-linux-musl
cargo build --release --quiet --target $target -p keel-oem --bin keel-oem --example oem_bench
rel=$CARGO_TARGET_DIR/$target/release
# State on disk like /var; run-dir on a tmpfs like /run when there is one.
work=$(mktemp -d "${TMPDIR:-/var/tmp}/keel-oem-bench.XXXXXX")
shm=$(mktemp -d /dev/shm/keel-oem-bench.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$work" "$shm"' EXIT
{
  echo "## keel-oem ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(uname -r))"
  echo
  "$rel/examples/oem_bench" "$rel/keel-oem" \
    "$top/image/oem/qemu" "$work" "${KEEL_BENCH_N:-500}" "$shm"
  echo
  echo "ratio = keel-oem / peer; e2e includes process start, parsing oem.toml, status.json (at most once a second) and results.json once (state dir: $work, run dir: $shm); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
} | tee "$out/keel-oem.md"
