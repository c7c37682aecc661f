#!/usr/bin/env bash
# The benchmark report (issue 8): Keel against its peer first, then every
# component benchmark of the same `./run bench` run, then the binary sizes.
# Run last by `./run bench` with its output directory; reads the Markdown
# the other benches wrote there and writes OUT/report.md and
# docs/bench-report.md. A component that did not run in this run is said
# so, with the committed copy linked when there is one.
set -euo pipefail
out=${1:-build/bench}
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${KEEL_BUILD_DIR:-$top/build}
mkdir -p "$out"

# file in $out | title | where it comes from | committed copy (docs/)
parts=(
  "peers.md|Keel against Debian 12 + cloud-init: first boot|tests/bench/peer.sh|bench-peers.md"
  "foundation.md|Boot foundation: kernel → switch_root, SSH, initramfs size|tests/bench/foundation.sh|bench-foundation.md"
  "keel-netd.md|DHCP: keel-netd against dhclient and dhcpcd|crates/keel-netd/bench.sh|"
  "toolbox.md|toolbox against systemd-nspawn and skopeo + umoci|crates/toolbox/bench.sh|"
  "keel-oem.md|OEM hooks runner overhead|crates/keel-oem/bench.sh|"
  "keel-provision.md|Provisioning against cloud-init|crates/keel-provision/bench.sh|"
  "keel-update.md|Updates: keel-update against curl + zstd -d + dd; agent RSS and size; one changed file in /usr|crates/keel-update/bench.sh|bench-update.md"
  "keel-install.md|Installing: keel-install against curl + zstd -d + dd|crates/keel-install/bench.sh|"
  "keel-lock.md|Reboot lock: etcd acquire/release latency and a fleet rollout against the ideal|crates/keel-lock/bench.sh|"
)

# Component files start with their own "##"/"###" heading; one level down.
demote() { sed -E 's/^(#{1,5}) /#\1 /'; }

{
  echo "# Keel benchmark report"
  echo
  echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by \`tests/bench/report.sh\` (run last by \`./run bench\`) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores (load average now: $(cut -d' ' -f1-3 /proc/loadavg)); Keel $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')."
  echo "Every section below was measured in one run, each against its peer on the same machine; ratios are Keel / peer unless a table says otherwise."
  echo
  echo "| section | source | result |"
  echo "|---|---|---|"
  for p in "${parts[@]}"; do
    IFS='|' read -r f title src doc <<<"$p"
    if [ -s "$out/$f" ]; then state="this run"
    elif [ -n "$doc" ] && [ -s "$top/docs/$doc" ]; then state="not run; last committed: [docs/$doc]($doc)"
    else state="not run"
    fi
    echo "| $title | \`$src\` | $state |"
  done
  echo "| Binary sizes | \`image.json\` of the image measured | $( [ -f "$build/image.json" ] && echo "this build" || echo "no image built" ) |"
  for p in "${parts[@]}"; do
    IFS='|' read -r f title src doc <<<"$p"
    echo
    echo "## $title"
    echo
    if [ -s "$out/$f" ]; then
      if [ "$f" = peers.md ]; then
        # Its own "# title" and date are in the header above.
        sed '1{/^# /d}' "$out/$f" | demote
      else
        demote < "$out/$f"
      fi
    else
      echo "Not run in this run (\`$src\` needs root and its tools; see the script)."
      [ -n "$doc" ] && [ -s "$top/docs/$doc" ] && echo "The last committed result is [docs/$doc]($doc)."
    fi
  done
  echo
  echo "## Binary sizes"
  echo
  if [ -f "$build/image.json" ]; then
    echo "Keel's static binaries as shipped in /usr (x86_64-unknown-linux-musl, release, stripped), and the boot artifacts, from \`image.json\`."
    echo
    echo "| file | bytes | MiB |"
    echo "|---|---:|---:|"
    python3 - "$build/image.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for k, v in sorted(m["sizes"].items(), key=lambda kv: (not kv[0].startswith("bin/"), kv[0])):
    print(f"| {k} | {v:,} | {v / 1048576:.2f} |")
PY
  else
    echo "No image built ($build/image.json missing)."
  fi
} > "$out/report.md"
cp "$out/report.md" "$top/docs/bench-report.md"
echo "report: $out/report.md, docs/bench-report.md" >&2
