#!/usr/bin/env bash
# keel-netd benchmark: time from "link up" to "address configured and
# default route installed" for keel-netd, dhclient and dhcpcd against the
# same dnsmasq in the same netns + veth setup; keel-netd's RSS after many
# short-lease renewals; binary size. Writes $1/keel-netd.md.
#
# Each run uses fresh namespaces and fresh lease state, so every client does
# a full DISCOVER/OFFER/REQUEST/ACK. Two scenarios: "linkup" — the client
# runs, then the carrier appears (the server end of the veth comes up);
# the issue's measure. "cold" — the client is started with the link down
# and brings it up itself (includes process start-up). The end time is the
# kernel's timestamp of the default route from `ip -ts monitor route`. /etc/resolv.conf writes by dhclient-script and
# dhcpcd hooks land in /etc/netns/<ns>/resolv.conf (ip netns exec bind-mounts
# it), never the host's. dnsmasq runs with --no-ping: its default ICMP
# probe before each OFFER adds ~3 s of server time that would hide the
# clients' own cost. dhcpcd is measured as configured by Debian (with its
# ARP probe of the offered address) and with --noarp.
set -euo pipefail
out=${1:-/tmp/keel-netd-bench}
mkdir -p "$out"
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (network namespaces)" >&2; exit 1; }
RUNS=${RUNS:-7}
RENEW_SECS=${RENEW_SECS:-200}

BIN=${KEEL_NETD_BIN:-$top/target/x86_64-unknown-linux-musl/release/keel-netd}
if [ ! -x "$BIN" ]; then
  (cd "$top" && cargo build --release --target x86_64-unknown-linux-musl -p keel-netd)
fi

work=$(mktemp -d /tmp/keel-netd-bench.XXXXXX)
# keel-netd's runtime state goes to tmpfs, as /run/keel does on a host.
rundir=$(mktemp -d /run/keel-netd-bench.XXXXXX)
SRV=knb-srv-$$ CLI=knb-cli-$$
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.2
  ip netns del "$SRV" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  rm -rf "/etc/netns/$CLI" "$work" "$rundir"
}
trap cleanup EXIT
trap "exit 1" INT TERM

now_ms() { date +%s%3N; }

setup() { # $1: dnsmasq extra args
  ip netns del "$SRV" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  ip netns add "$SRV"; ip netns add "$CLI"
  mkdir -p "/etc/netns/$CLI"; : > "/etc/netns/$CLI/resolv.conf"
  ip link add knbs type veth peer name knbc
  ip link set knbs netns "$SRV"; ip link set knbc netns "$CLI"
  ip -n "$SRV" addr add 10.98.0.1/24 dev knbs
  ip -n "$SRV" link set knbs up; ip -n "$SRV" link set lo up; ip -n "$CLI" link set lo up
  rm -f "$work/dnsmasq.leases" "$work/dnsmasq.log"
  # shellcheck disable=SC2086
  ip netns exec "$SRV" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=knbs \
    --bind-interfaces --dhcp-range=10.98.0.50,10.98.0.150,2m --dhcp-option=option:dns-server,10.98.0.53 \
    --no-ping --log-dhcp --log-facility="$work/dnsmasq.log" --dhcp-leasefile="$work/dnsmasq.leases" $1 \
    >/dev/null 2>&1 &
  DNSMASQ=$!; pids+=("$DNSMASQ")
  for _ in $(seq 100); do grep -q "DHCP, IP range" "$work/dnsmasq.log" 2>/dev/null && break; sleep 0.05; done
}

teardown() {
  # dhcpcd runs privilege-separated helpers that do not always exit on
  # SIGTERM: kill everything left in the client namespace (only ours).
  kill "$CLIENT" 2>/dev/null || true
  sleep 0.2
  ip netns pids "$CLI" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  wait "$CLIENT" 2>/dev/null || true
  kill "$DNSMASQ" 2>/dev/null || true; wait "$DNSMASQ" 2>/dev/null || true
  ip netns del "$CLI"; ip netns del "$SRV"
  rm -f /var/lib/dhcpcd/knbc*.lease 2>/dev/null || true
}

configured() {
  ip -n "$CLI" -4 route show default dev knbc 2>/dev/null | grep -q "via 10.98.0.1" &&
    ip -n "$CLI" -4 addr show dev knbc 2>/dev/null | grep -q "inet 10.98.0."
}

start_client() { # $1: name
  rm -rf "$work/state" "$rundir/run" "$work/net"; mkdir -p "$work/state" "$rundir/run" "$work/net"
  printf '[Match]\nName=knbc\n[Network]\nDHCP=yes\n' > "$work/net/50-bench.network"
  case $1 in
    keel-netd) ip netns exec "$CLI" "$BIN" --network-dir "$work/net" --state-dir "$work/state" --run-dir "$rundir/run" >/dev/null 2>"$work/client.log" & ;;
    dhclient) ip netns exec "$CLI" dhclient -4 -d -lf "$work/dhclient.leases" -pf "$work/dhclient.pid" knbc >/dev/null 2>"$work/client.log" & ;;
    dhcpcd) ip netns exec "$CLI" dhcpcd -4 -B -q knbc >/dev/null 2>"$work/client.log" & ;;
    dhcpcd-noarp) ip netns exec "$CLI" dhcpcd -4 -B -q --noarp knbc >/dev/null 2>"$work/client.log" & ;;
  esac
  CLIENT=$!; pids+=("$CLIENT")
}

# Timestamp (ms) of the first "default via 10.98.0.1" route event in the
# `ip -ts monitor route` output $1, or empty.
route_ts() {
  local line ts
  line=$(grep -m1 "default via 10.98.0.1" "$1" || true)
  [ -n "$line" ] || return 0
  ts=${line%%]*}; ts=${ts#[}
  date -d "${ts/T/ }" +%s%3N
}

time_one() { # $1: client, $2: linkup|cold; prints ms
  setup ""
  rm -f "$work/dhclient.leases"
  # linkup: the client is already running when the carrier appears (the
  # server end of the veth comes up). cold: the client is started with the
  # link down and brings it up itself (includes process start-up).
  [ "$2" = linkup ] && ip -n "$SRV" link set knbs down
  ip -n "$CLI" -ts monitor route >"$work/monitor" 2>/dev/null &
  local mon=$!
  sleep 0.1
  local t0 t1
  if [ "$2" = linkup ]; then
    start_client "$1"
    sleep 2
    t0=$(now_ms)
    ip -n "$SRV" link set knbs up
  else
    t0=$(now_ms)
    start_client "$1"
  fi
  local deadline=$((t0 + 30000))
  until configured; do
    if [ "$(now_ms)" -ge $deadline ]; then
      echo "bench.sh: $1 got no lease in 30 s" >&2
      kill "$mon" 2>/dev/null || true; teardown; echo 30000; return
    fi
    sleep 0.02
  done
  sleep 0.05
  kill "$mon" 2>/dev/null || true; wait "$mon" 2>/dev/null || true
  t1=$(route_ts "$work/monitor")
  teardown
  echo $(( ${t1:-$t0} - t0 ))
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

declare -A MED
clients=(keel-netd dhclient dhcpcd dhcpcd-noarp)
for scenario in linkup cold; do
  for c in "${clients[@]}"; do
    command -v "${c%-noarp}" >/dev/null || [ "$c" = keel-netd ] || { echo "bench.sh: $c not installed, skipping" >&2; continue; }
    samples=()
    for _ in $(seq "$RUNS"); do samples+=("$(time_one "$c" "$scenario")"); done
    MED[$c/$scenario]=$(printf '%s\n' "${samples[@]}" | median)
    echo "$c ($scenario): ${samples[*]} ms (median ${MED[$c/$scenario]})" >&2
  done
done

# RSS after many renewals: T1 = 3 s (dnsmasq clamps lower values), T2 = 6 s,
# lease 2 min; an hour at the 2-minute lease with default T1 is 60 renewals.
setup "--dhcp-option=58,3 --dhcp-option=59,6"
start_client keel-netd
netd=$CLIENT
sleep "$RENEW_SECS"
renewals=$(grep -c "DHCPACK" "$work/dnsmasq.log" || true)
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$netd/status")
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$netd/status")
teardown

size=$(stat -c %s "$BIN")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
{
  echo "## keel-netd ($(date -u +%Y-%m-%dT%H:%MZ), $RUNS runs each, median)"
  echo
  echo "| client | carrier up → address + default route (ms) | ratio vs dhclient | cold start → configured (ms) | ratio vs dhclient |"
  echo "|---|---:|---:|---:|---:|"
  for c in "${clients[@]}"; do
    [ -n "${MED[$c/linkup]:-}" ] || continue
    echo "| $c | ${MED[$c/linkup]} | $(ratio "${MED[$c/linkup]}" "${MED[dhclient/linkup]:-0}") | ${MED[$c/cold]} | $(ratio "${MED[$c/cold]}" "${MED[dhclient/cold]:-0}") |"
  done
  echo
  echo "| measure | value | target |"
  echo "|---|---:|---:|"
  echo "| keel-netd RSS after $((renewals - 1)) renewals (T1 = 3 s, ${RENEW_SECS} s) | $((rss_kib)) KiB (peak $hwm_kib KiB) | ≤ 4096 KiB |"
  echo "| keel-netd binary (static musl, stripped) | $size bytes ($(awk -v s="$size" 'BEGIN{printf "%.2f", s/1048576}') MiB) | ≤ 3 MiB |"
} | tee "$out/keel-netd.md"
