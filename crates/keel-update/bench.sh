#!/usr/bin/env bash
# keel-update benchmark (called by `./run bench` with an output directory;
# root). Issue 15 §6, in one run, against the built image ($KEEL_BUILD_DIR,
# ./run image) as version N on a loop device (a sparse copy of keel.img,
# booted slot A), with release trees served by nginx on loopback
# (tests/bench/lib/common.sh, shared with keel-install's bench):
#  1. a full update (USR-A blanked so no chunk can be copied locally):
#     `keel-update check` (fetch, verify every chunk, write USR-B and its
#     hash tree, read both back, compare the verity root hash, fetch the
#     kernel and initramfs) against `curl | zstd -d | dd` of the same
#     payload to the same partitions of the same device; 3 runs each,
#     interleaved, medians compared (target >= 0.9x);
#  2. the daemon: RSS idle and while downloading (VmRSS/VmHWM from /proc;
#     target <= 8 MiB), time from "update found" (manifest verified,
#     download starts) to "staged"; the static binary's size (<= 4 MiB);
#  3. the bytes downloaded for an update that changes one file in /usr:
#     version N+1 built by keel-image from the same cached tree with the
#     same epoch (only os-release differs), onto an intact USR-A; and the
#     same for an N+1 with a later epoch (the time its build starts), which
#     moves every clamped mtime (target <= 10 % of the full update).
# Writes keel-update.md. KEEL_UPDATE_BENCH_RUNS: runs per side (3).
set -euo pipefail
out=$(realpath -m "${1:-$(mktemp -d)}")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target}
build=$(realpath -m "${KEEL_BUILD_DIR:-$top/build}")
runs=${KEEL_UPDATE_BENCH_RUNS:-3}
mkdir -p "$out"
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (loop devices)" >&2; exit 1; }
for t in nginx curl zstd dd losetup sfdisk python3 bc mount; do
  command -v $t >/dev/null || { echo "bench.sh: $t missing" >&2; exit 1; }
done
for f in keel.img usr.erofs image.json dev-update-key/update.pub; do
  [ -e "$build/$f" ] || { echo "bench.sh: $build/$f missing (./run image first)" >&2; exit 1; }
done
# shellcheck source=../../tests/bench/lib/common.sh
. "$top/tests/bench/lib/common.sh"
target=x86_64-unknown-linux-musl
work=$(mktemp -d "${TMPDIR:-/var/tmp}/keel-update-bench.XXXXXX")
# The agent measured is the one N ships, and N+1 gets N's binaries (taken
# from N's /usr, which keel-image copies unchanged from --bin-dir): other
# work rebuilding target/ meanwhile must not count as changed files.
# keel-image: the one that built N (KEEL_IMAGE_BIN; built if missing).
kimage=${KEEL_IMAGE_BIN:-$CARGO_TARGET_DIR/release/keel-image}
[ -x "$kimage" ] || cargo build --release --quiet -p keel-image
kimage_note=
[ "$kimage" -nt "$build/image.json" ] && kimage_note="(note: $kimage is newer than N's build: N and N+1 may come from different keel-image code)"
cp "$kimage" "$work/keel-image"; kimage=$work/keel-image
size_bin=$CARGO_TARGET_DIR/$target/release/keel-update
bench_err=$work/last.err
los=(); daemon=; mnt=()
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  [ -n "$bench_ngx" ] && kill "$bench_ngx" 2>/dev/null && wait "$bench_ngx" 2>/dev/null
  local m l
  for m in "${mnt[@]}"; do umount "$m" 2>/dev/null || true; done
  for l in "${los[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# --- the versions -----------------------------------------------------------
ver=$(python3 -c "import json;print(json.load(open('$build/image.json'))['version'])")
next=$(echo "$ver" | awk -F. -v OFS=. '{$NF=$NF+1; print}')
# N's epoch: the EROFS superblock's build time (keel-image sets it, and
# clamps every later mtime to it).
mkdir -p "$work/mnt"
mount -o ro,loop "$build/usr.erofs" "$work/mnt"; mnt+=("$work/mnt")
epoch=$(python3 -c "import struct;f=open('$build/usr.erofs','rb');f.seek(1024);b=f.read(64)
assert struct.unpack_from('<I',b,0)[0]==0xe0f5e1e2, 'not EROFS';print(struct.unpack_from('<Q',b,24)[0])")
mkdir -p "$work/bin"
python3 - "$top/image/image.toml" "$work/mnt" "$work/bin" <<'PY'
import shutil, sys, tomllib
for b in tomllib.load(open(sys.argv[1], "rb")).get("binary", []):
    shutil.copy2(f"{sys.argv[2]}/{b['dest']}", f"{sys.argv[3]}/{b['name']}")
PY
umount "$work/mnt"; mnt=()
bin=$work/bin/keel-update
variant() { # DIR EPOCH: N+1 from the same cached tree, its release tree
  SOURCE_DATE_EPOCH=$2 nice -n 5 "$kimage" build --config "$top/image/image.toml" \
    --bin-dir "$work/bin" --out "$1" --version "$next" \
    --dev-update-key "$build/dev-update-key" >"$1.log" 2>&1 \
    || { tail -20 "$1.log" >&2; return 1; }
  "$kimage" release --build "$1" --channel stable --out "$1/tree" --no-disk >>"$1.log" 2>&1 \
    || { tail -20 "$1.log" >&2; return 1; }
}
echo "bench: building $next twice (N's epoch $epoch, and a later one)" >&2
t_build=$(bench_t variant "$work/same" "$epoch")
# A later release: an epoch after N's but before this build writes its
# files (as a later commit's time would be), so they are clamped too.
later_epoch=$(($(date +%s) - 1))
variant "$work/later" "$later_epoch"
# What differs between N's /usr and N+1's (the honest "one file").
changed() { # ERofs_A EROFS_B: files whose content or metadata differ
  mkdir -p "$work/a" "$work/b"
  mount -o ro,loop "$1" "$work/a"; mnt+=("$work/a")
  mount -o ro,loop "$2" "$work/b"; mnt+=("$work/b")
  (cd "$work/a" && find . -printf '%p %m %U %G %T@ %s\n' | sort) > "$work/la"
  (cd "$work/b" && find . -printf '%p %m %U %G %T@ %s\n' | sort) > "$work/lb"
  local content meta
  diff -rq --no-dereference "$work/a" "$work/b" > "$work/dq" 2>/dev/null || true
  content=$(wc -l < "$work/dq")
  meta=$(diff "$work/la" "$work/lb" | grep -c '^>' || true)
  umount "$work/a" "$work/b"; mnt=()
  echo "$content file(s) with other content ($(sed -E "s|^Files $work/a/([^ ]*) and .*|\1|; s|^Only in $work/.*|&|" "$work/dq" | head -5 | tr '\n' ' ' | sed 's/ $//')), $meta inode(s) with other metadata"
}
diff_same=$(changed "$build/usr.erofs" "$work/same/usr.erofs")
# N's build must have written its files after its epoch (a commit landing
# during that build makes the epoch later than them: they stay unclamped
# in N and every N+1 differs in all their inodes).
race=
awk -v e="$epoch" '$1 == "./bin" && $5 + 0 != e {exit 1}' "$work/la" \
  || race="**N is not comparable**: its build wrote /usr/bin before its epoch $epoch (a commit landed during the build), so the files Keel's build writes kept their own mtimes in N and differ in every N+1; rebuild N (./run image) and run again."
diff_later=$(changed "$build/usr.erofs" "$work/later/usr.erofs")
# Reproducible: N+1 rebuilt gives the same bytes (the second build).
if [ -n "${KEEL_UPDATE_BENCH_REPRO:-}" ]; then
  variant "$work/again" "$epoch"
  cmp -s "$work/same/usr.erofs" "$work/again/usr.erofs" && repro="yes" || repro="NO"
  cmp -s "$work/same/usr.verity" "$work/again/usr.verity" || repro="NO (hash tree)"
fi

serve=$work/serve
mkdir -p "$serve"
ln -s "$work/same/tree" "$serve/same"
ln -s "$work/later/tree" "$serve/later"
bench_nginx "$serve" "$work"
url=$bench_url
man=$work/same/tree/stable/$next/manifest.json
read -r usr_file usr_size usr_csize ver_file ver_size ver_csize k_file k_csize i_file i_csize < <(python3 -c "
import json;a=json.load(open('$man'))['artifacts'];t=a['usr_verity']['tree']
print(a['usr']['file'],a['usr']['size'],a['usr']['compressed_size'],t['file'],t['size'],t['compressed_size'],
      a['kernel']['file'],a['kernel']['compressed_size'],a['initramfs']['file'],a['initramfs']['compressed_size'])")
full_dl=$((usr_csize + ver_csize + k_csize + i_csize))

# --- the machine ------------------------------------------------------------
disk() { # NAME: $dev = a loop device over a sparse copy of keel.img
  cp --sparse=always "$build/keel.img" "$work/$1.img"
  dev=$(losetup --find --show "$work/$1.img")
  los+=("$dev")
}
part() { # DEV LABEL: start and size in bytes
  sfdisk -J "$1" | python3 -c "
import json,sys
for p in json.load(sys.stdin)['partitiontable']['partitions']:
    if p.get('name') == '$2': print(p['start'] * 512, p['size'] * 512)"
}
mkdir -p "$work/keys" "$work/root/etc/keel/update.d"
cp "$build/dev-update-key/update.pub" "$work/keys/dev.pub"
printf 'NAME=Keel\nID=keel\nVERSION_ID=%s\n' "$ver" > "$work/os-release"
agent_cmd() { # DEV SUBTREE: $A = keel-update with this machine's files
  local dev=$1 sub=$2
  printf '{"version":1,"slot":"A","disk":"%s"}\n' "$dev" > "$work/boot.json"
  printf 'base_url = "%s/%s"\nchannel = "stable"\n[reboot]\nstrategy = "off"\n' "$url" "$sub" \
    > "$work/root/etc/keel/update.d/10-bench.toml"
  A=(env -u http_proxy -u https_proxy -u all_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY
    KEEL_LOG=info "$bin" --disk "$dev" --boot-record "$work/boot.json"
    --os-release "$work/os-release" --keys "$work/keys" --state-dir "$work/state"
    --config-root "$work/root" --no-esp --no-bus)
}
agent() { agent_cmd "$1" "$2"; shift 2; "${A[@]}" "$@"; }
# Wall, user and system seconds of CMD and its children (stderr in $bench_err).
cpu_t() {
  local TIMEFORMAT='%R %U %S'
  { time "$@" >/dev/null 2>"$bench_err"; } 2>&1 || { cat "$bench_err" >&2; return 1; }
}

disk full; full=$dev
gpt_save() { dd if="$full" of="$work/gpt.head" bs=1M count=1 status=none; }
gpt_restore() { dd if="$work/gpt.head" of="$full" bs=1M count=1 conv=notrunc,fsync status=none; }
read -r a_off a_len < <(part "$full" USR-A)
read -r av_off av_len < <(part "$full" USR-A-VERITY)
read -r b_off _ < <(part "$full" USR-B)
read -r bv_off _ < <(part "$full" USR-B-VERITY)
# Nothing in slot A to copy from: every chunk is downloaded.
dd if=/dev/zero of="$full" bs=4M oflag=seek_bytes seek="$a_off" count=$((a_len >> 22)) conv=notrunc,fsync status=none
dd if=/dev/zero of="$full" bs=4M oflag=seek_bytes seek="$av_off" count=$((av_len >> 22)) conv=notrunc,fsync status=none
gpt_save
cat "$work/same/tree/stable/$next"/* > /dev/null  # the served files in the page cache

keel_full() {
  rm -rf "$work/state"; gpt_restore
  agent "$full" same check
}
peer_full() {
  local u=$url/same/stable/$next
  curl -sf "$u/$usr_file" | zstd -dc | dd of="$full" bs=4M oflag=seek_bytes seek="$b_off" conv=notrunc,fsync status=none
  curl -sf "$u/$ver_file" | zstd -dc | dd of="$full" bs=4M oflag=seek_bytes seek="$bv_off" conv=notrunc,fsync status=none
  curl -sf "$u/$k_file" | zstd -dc > "$work/vmlinuz"
  curl -sf "$u/$i_file" | zstd -dc > "$work/initramfs.img"
}
t_keel=(); t_peer=(); c_keel=(); c_peer=()
for i in $(seq "$runs"); do
  echo "bench: full update, run $i/$runs" >&2
  l0=$(bench_lines "$work")
  cpu_t keel_full > "$work/t"; read -r w u s < "$work/t"
  t_keel+=("$w"); c_keel+=("$(echo "$u + $s" | bc)")
  [ "$i" = 1 ] && { full_sent=$(bench_sent "$work" "$l0"); cp "$bench_err" "$out/keel-update.log"; }
  cpu_t peer_full > "$work/t"; read -r w u s < "$work/t"
  t_peer+=("$w"); c_peer+=("$(echo "$u + $s" | bc)")
done
m_keel=$(bench_median "${t_keel[@]}")
m_peer=$(bench_median "${t_peer[@]}")
mc_keel=$(bench_median "${c_keel[@]}")
mc_peer=$(bench_median "${c_peer[@]}")
f1() { printf '%.1f ' "$@" | sed 's/ $//'; }
f2() { printf '%.2f' "$1"; }
mib() { f1 "$(echo "scale=3; $1 / 1048576" | bc)"; }
mibs() { f1 "$(echo "scale=3; $1 / 1048576 / $2" | bc)"; }

# --- the daemon: RSS, found -> staged -----------------------------------------
rm -rf "$work/state"; gpt_restore
echo "bench: daemon (idle, then the full update)" >&2
agent_cmd "$full" same
"${A[@]}" daemon --first-check 3 2>"$work/daemon.log" &
daemon=$!
python3 - "$daemon" "$work/state/update.json" > "$work/daemon.txt" <<'PY'
import json, sys, time
pid, status = sys.argv[1], sys.argv[2]
def mem():
    d = {}
    for l in open(f"/proc/{pid}/status"):
        k, _, v = l.partition(":")
        if k in ("VmRSS", "VmHWM"):
            d[k] = int(v.split()[0])
    return d
def state():
    try:
        s = json.load(open(status)).get("state")
    except (OSError, ValueError):
        return None
    return s.get("state") if isinstance(s, dict) else s
t0 = time.monotonic(); idle = None; seen = {}; peak = 0
while time.monotonic() - t0 < 900:
    m = mem(); st = state(); now = time.monotonic() - t0
    if idle is None and now >= 2.0:
        idle = m["VmRSS"]
    if st and st not in seen:
        seen[st] = now
    if st == "downloading":
        peak = max(peak, m["VmRSS"])
    if st in ("staged", "error"):
        break
    time.sleep(0.02)
m = mem()
print(idle, peak, m["VmHWM"], seen.get("checking", -1), seen.get("downloading", -1),
      seen.get("staged", -1), st)
PY
kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true; daemon=
read -r rss_idle rss_dl hwm t_check t_found t_staged d_state < "$work/daemon.txt"
[ "$d_state" = staged ] || { cat "$work/daemon.log" >&2; echo "bench: the daemon ended $d_state" >&2; exit 1; }
found_staged=$(printf '%.1f' "$(echo "$t_staged - $t_found" | bc)")
check_staged=$(printf '%.1f' "$(echo "$t_staged - $t_check" | bc)")
size=$(stat -c %s "$size_bin" 2>/dev/null || echo 0)
shipped=$(stat -c %s "$bin")

# --- one file changed: chunks copied from slot A ------------------------------
reuse() { # SUBTREE: bytes fetched for N -> N+1 onto an intact slot A, and the summary
  local l0
  disk "reuse-$1"
  rm -rf "$work/state"
  l0=$(bench_lines "$work")
  agent "$dev" "$1" check 2>"$work/reuse-$1.log" >/dev/null || { cat "$work/reuse-$1.log" >&2; return 1; }
  echo "$(bench_sent "$work" "$l0") $(grep -o 'staged in .*' "$work/reuse-$1.log" | tail -1)"
  losetup -d "$dev"; rm -f "$work/reuse-$1.img"
}
echo "bench: one file changed (same epoch, a later one)" >&2
reuse same > "$work/reuse-same.txt"
reuse later > "$work/reuse-later.txt"
read -r sent_same sum_same < "$work/reuse-same.txt"
read -r sent_later sum_later < "$work/reuse-later.txt"
pct() { f1 "$(echo "scale=3; 100 * $1 / $2" | bc)"; }

# --- the report -------------------------------------------------------------
verdict() { [ "$(echo "$1" | bc)" = 1 ] && echo "meets" || echo "**misses**"; }
{
  echo "# keel-update"
  echo
  echo "$(date -u +%F), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); version $ver → $next of the built image ($build), built from the same cached Debian tree by keel-image; nginx on loopback; the device a loop device over a sparse copy of keel.img in ${TMPDIR:-/var/tmp}."
  echo "USR $(mib "$usr_size") MiB ($(mib "$usr_csize") MiB compressed), hash tree $(mib "$ver_size") MiB, kernel + initramfs $(mib $((k_csize + i_csize))) MiB compressed: a full update downloads $(mib $full_dl) MiB."
  echo
  echo "## Full update: download + verify + write"
  echo
  echo "USR-A blanked, so every chunk is downloaded (nginx sent $(mib "${full_sent:-0}") MiB in the first run). $runs runs each, interleaved; medians."
  echo
  echo "| run | wall seconds (each run) | median | MiB/s written (USR + hash tree) | CPU seconds (median, user + sys) | peer / keel-update (wall) |"
  echo "|---|---|---|---|---|---|"
  echo "| keel-update check (verify every chunk, write, read back, root hash) | $(f1 "${t_keel[@]}") | $(f1 "$m_keel") | $(mibs $((usr_size + ver_size)) "$m_keel") | $(f1 "$mc_keel") | |"
  echo "| curl \\| zstd -d \\| dd (USR, hash tree; kernel, initramfs to files) | $(f1 "${t_peer[@]}") | $(f1 "$m_peer") | $(mibs $((usr_size + ver_size)) "$m_peer") | $(f1 "$mc_peer") | $(f2 "$(bench_ratio "$m_peer" "$m_keel")")× ($(verdict "$m_peer / $m_keel >= 0.9") ≥ 0.9×) |"
  echo
  echo "keel-update's own summary: $(grep -o 'staged in .*' "$out/keel-update.log" | tail -1 || true)"
  echo
  echo "## The agent"
  echo
  echo "| measure | value | target |"
  echo "|---|---|---|"
  echo "| \"update found\" (manifest verified, download starts) → staged, full image | $found_staged s | |"
  echo "| check started → staged | $check_staged s | |"
  echo "| daemon RSS idle (VmRSS, waiting for its first check) | $(echo "scale=2; $rss_idle / 1024" | bc) MiB | ≤ 8 MiB, $(verdict "$rss_idle <= 8192") |"
  echo "| daemon RSS while downloading (largest VmRSS seen, 20 ms polls) | $(echo "scale=2; $rss_dl / 1024" | bc) MiB | ≤ 8 MiB, $(verdict "$rss_dl <= 8192") |"
  echo "| daemon peak RSS over the whole update (VmHWM) | $(echo "scale=2; $hwm / 1024" | bc) MiB | ≤ 8 MiB, $(verdict "$hwm <= 8192") |"
  echo "| static binary (target/$target/release/keel-update) | $size bytes ($(echo "scale=2; $size / 1048576" | bc) MiB) | ≤ 4 MiB, $(verdict "$size <= 4194304") |"
  echo "| as shipped in N's /usr/bin (the binary measured here) | $shipped bytes ($(echo "scale=2; $shipped / 1048576" | bc) MiB) | ≤ 4 MiB |"
  echo
  echo "## One file changed in /usr: chunks copied from the running slot"
  echo
  echo "N+1 built by keel-image from the same cached tree and with N's binaries (one image build: $(f1 "$t_build") s) $kimage_note. Bytes nginx sent for the whole update (documents, chunks, kernel, initramfs), onto an intact USR-A:"
  echo
  echo "| N+1 | what differs in /usr | downloaded | of a full update | target ≤ 10 % | agent's summary |"
  echo "|---|---|---|---|---|---|"
  echo "| same epoch (SOURCE_DATE_EPOCH $epoch) | $diff_same | $(mib "$sent_same") MiB | $(pct "$sent_same" $full_dl) % | $(verdict "$sent_same * 10 <= $full_dl") | $sum_same |"
  echo "| a later release (SOURCE_DATE_EPOCH $later_epoch) | $diff_later | $(mib "$sent_later") MiB | $(pct "$sent_later" $full_dl) % | $(verdict "$sent_later * 10 <= $full_dl") | $sum_later |"
  echo
  echo "The kernel and initramfs ($(mib $((k_csize + i_csize))) MiB, $(pct $((k_csize + i_csize)) $full_dl) % of a full update) are always downloaded whole; the rest is USR and hash-tree chunks ($(python3 -c "import json;print(json.load(open('$man'))['chunk_size']>>20)") MiB each) that differ from slot A at the same offset. See DESIGN.md \"Reproducible USR images\" for what the EROFS layout allows."
  if [ -n "$race" ]; then
    echo
    echo "$race"
  fi
  if [ -n "${repro:-}" ]; then
    echo
    echo "N+1 built twice gives the same USR image and hash tree: $repro."
  fi
} > "$out/keel-update.md"
cat "$out/keel-update.md"
