#!/usr/bin/env bash
# Single-flow TCP throughput through a WireGuard tunnel between network
# namespaces on this machine, MTU 1420, side by side in ONE run:
#
#   routerd-host <-> wireguard-go    LAN host -TAP- routerd-host =UDP= wireguard-go (iperf3 server on its wg address)
#   routerd-host <-> routerd-host    LAN host -TAP- routerd-host =UDP= routerd-host -TAP- LAN host
#   wireguard-go <-> wireguard-go    iperf3 on each side's wg interface
#   boringtun-cli <-> boringtun-cli  iperf3 on each side's tun interface
#
# Usage (root):  host/bench/throughput.sh [SECONDS]      (default 10 s per run)
# Environment:   CARGO_TARGET_DIR (default: target), BORINGTUN (default:
#                /work/boringtun-cli/bin/boringtun-cli; build it with
#                `cargo install boringtun-cli --root /work/boringtun-cli`),
#                ROUNDS (default 1: each scenario once per round, interleaved).
# It installs iperf3 with apt-get if missing. Traffic stays inside veth
# pairs and the namespaces created here; everything is removed on exit.
set -euo pipefail

SECS=${1:-10}
ROUNDS=${ROUNDS:-1}
TARGET=${CARGO_TARGET_DIR:-target}
BORINGTUN=${BORINGTUN:-/work/boringtun-cli/bin/boringtun-cli}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "throughput.sh: needs root (network namespaces)"; exit 2; }
command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iperf3 >/dev/null
for b in wireguard-go wg ip iperf3; do command -v $b >/dev/null || { echo "missing: $b"; exit 1; }; done
[ -x "$BORINGTUN" ] || { echo "missing boringtun-cli at $BORINGTUN (cargo install boringtun-cli --root /work/boringtun-cli)"; exit 1; }

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -p routerd-host -q)
case $TARGET in /*) BIN=$TARGET/release/routerd-host ;; *) BIN=$ROOT/$TARGET/release/routerd-host ;; esac

P=rdb$$
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do ip netns del "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

ns() { ip netns add "$P$1"; ip -n "$P$1" link set lo up; }
veth() { # veth NS_A ADDR_A NS_B ADDR_B
  ip -n "$P$1" link add "${P}a$1" type veth peer name "${P}b$3" netns "$P$3"
  ip -n "$P$1" addr add "$2/24" dev "${P}a$1"; ip -n "$P$1" link set "${P}a$1" up
  ip -n "$P$3" addr add "$4/24" dev "${P}b$3"; ip -n "$P$3" link set "${P}b$3" up
}
wait_link() { for _ in $(seq 100); do ip -n "$1" link show "$2" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no link $2 in $1"; exit 1; }

# iperf3 from namespace $1 to $2 (server already in its namespace); prints Mbit/s.
iperf() {
  local out
  out=$(timeout $((SECS + 20)) ip netns exec "$1" iperf3 -c "$2" -t "$SECS" -f m 2>&1) || { echo "iperf3 failed: $out" >&2; echo 0; return; }
  echo "$out" | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i-1) }' | tail -1
}
server() { ip netns exec "$1" iperf3 -s -D -B "$2" --pidfile "$WORK/iperf-$1.pid"; sleep 0.3; PIDS+=("$(cat "$WORK/iperf-$1.pid")"); }

box_config() { # NAME SIDE LAN WAN PEER_KEY PEER_ENDPOINT(or "") PEER_ALLOWED
  local ep=""
  [ -n "$6" ] && ep="endpoint = \"$6\""
  cat <<EOF
[device]
name = "$1"
side = "$2"
[[ports]]
name = "lan0"
role = "lan"
address = "$3"
[[ports]]
name = "wan0"
role = "wan"
address = "$4"
[[wireguard]]
name = "wg0"
listen_port = 51820
mtu = 1420
private_key = "device:wg0"
[[peers]]
name = "peer"
tunnel = "wg0"
public_key = "$5"
$ep
persistent_keepalive = 25
allowed_ips = [$7]
[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "peer" }
[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "peer" }
EOF
}

# routerd-host in namespace $1 with LAN TAP $2 moved into namespace $3 holding $4.
start_box() { # NS TAP LANNS LANADDR CONFIG KEYFILE
  ip netns exec "$1" "$BIN" --config "$5" --key-file "$6" --port "lan0=$2" --check-every 60 \
    >/dev/null 2>"$WORK/$1.log" &
  PIDS+=($!)
  wait_link "$1" "$2"
  ip -n "$1" link set "$2" netns "$3"
  ip -n "$3" addr add "$4/24" dev "$2"; ip -n "$3" link set "$2" up
}

key_pair() { umask 077; wg genkey > "$WORK/$1.key"; wg pubkey < "$WORK/$1.key" > "$WORK/$1.pub"; }
rkey() { "$BIN" pubkey --key-file "$WORK/$1.key"; }

# ---- routerd-host <-> wireguard-go ---------------------------------------
setup_rh_wggo() {
  ns rl; ns rr; ns rp
  veth rr 10.41.0.1 rp 10.41.0.2
  key_pair rpeer; "$BIN" pubkey --key-file "$WORK/rbox.key" >/dev/null
  box_config rh-onprem onprem 10.20.0.2/24 10.41.0.1/24 "$(cat "$WORK/rpeer.pub")" 10.41.0.2:51820 '"10.20.0.50/32"' > "$WORK/rbox.toml"
  start_box "${P}rr" "${P}t1" "${P}rl" 10.20.0.10 "$WORK/rbox.toml" "$WORK/rbox.key"
  ip netns exec "${P}rp" wireguard-go "${P}g1" 2>/dev/null; wait_link "${P}rp" "${P}g1"
  PIDS+=("$(pgrep -n -f "wireguard-go ${P}g1")")
  ip netns exec "${P}rp" wg set "${P}g1" listen-port 51820 private-key "$WORK/rpeer.key" \
    peer "$(rkey rbox)" allowed-ips 10.20.0.10/32 endpoint 10.41.0.1:51820
  ip -n "${P}rp" addr add 10.20.0.50/32 dev "${P}g1"; ip -n "${P}rp" link set "${P}g1" mtu 1420 up
  ip -n "${P}rp" route add 10.20.0.10/32 dev "${P}g1"
  server "${P}rp" 10.20.0.50
  ip netns exec "${P}rl" ping -c 3 -i 0.2 -W 1 10.20.0.50 >/dev/null || true
}

# ---- routerd-host <-> routerd-host ---------------------------------------
setup_rh_rh() {
  ns hl; ns ha; ns hb; ns hr
  veth ha 10.42.0.1 hb 10.42.0.2
  "$BIN" pubkey --key-file "$WORK/ha.key" >/dev/null; "$BIN" pubkey --key-file "$WORK/hb.key" >/dev/null
  box_config rh-onprem onprem 10.20.0.2/24 10.42.0.1/24 "$(rkey hb)" 10.42.0.2:51820 '"10.20.0.50/32"' > "$WORK/ha.toml"
  box_config rh-cloud cloud 10.20.0.3/24 10.42.0.2/24 "$(rkey ha)" "" '"10.20.0.10/32"' > "$WORK/hb.toml"
  start_box "${P}ha" "${P}t2" "${P}hl" 10.20.0.10 "$WORK/ha.toml" "$WORK/ha.key"
  start_box "${P}hb" "${P}t3" "${P}hr" 10.20.0.50 "$WORK/hb.toml" "$WORK/hb.key"
  server "${P}hr" 10.20.0.50
  ip netns exec "${P}hl" ping -c 3 -i 0.2 -W 1 10.20.0.50 >/dev/null || true
}

# ---- two userspace WireGuard daemons ---------------------------------------
setup_pair() { # TAG DAEMON...
  local t=$1; shift
  ns "${t}a"; ns "${t}b"
  veth "${t}a" "10.43.$((${#t} + 0)).1" "${t}b" "10.43.$((${#t} + 0)).2"
  key_pair "${t}a"; key_pair "${t}b"
  for s in a b; do
    ip netns exec "$P$t$s" "$@" "$P$t$s" >/dev/null 2>&1
    wait_link "$P$t$s" "$P$t$s"
    PIDS+=("$(pgrep -n -f -- "$1.* $P$t$s\$")")
  done
  local ua="10.43.${#t}.1" ub="10.43.${#t}.2"
  ip netns exec "$P${t}a" wg set "$P${t}a" listen-port 51820 private-key "$WORK/${t}a.key" \
    peer "$(cat "$WORK/${t}b.pub")" allowed-ips 10.30.0.2/32 endpoint "$ub:51820"
  ip netns exec "$P${t}b" wg set "$P${t}b" listen-port 51820 private-key "$WORK/${t}b.key" \
    peer "$(cat "$WORK/${t}a.pub")" allowed-ips 10.30.0.1/32 endpoint "$ua:51820"
  ip -n "$P${t}a" addr add 10.30.0.1/24 dev "$P${t}a"; ip -n "$P${t}a" link set "$P${t}a" mtu 1420 up
  ip -n "$P${t}b" addr add 10.30.0.2/24 dev "$P${t}b"; ip -n "$P${t}b" link set "$P${t}b" mtu 1420 up
  server "$P${t}b" 10.30.0.2
  ip netns exec "$P${t}a" ping -c 3 -i 0.2 -W 1 10.30.0.2 >/dev/null || true
}

setup_rh_wggo
setup_rh_rh
setup_pair wg wireguard-go
WG_SUDO=1 setup_pair bt "$BORINGTUN" --disable-drop-privileges

declare -A SUM
NAMES=("routerd-host <-> wireguard-go" "routerd-host <-> routerd-host" "wireguard-go <-> wireguard-go" "boringtun-cli <-> boringtun-cli")
for n in "${NAMES[@]}"; do SUM[$n]=0; done
LOADS=()
for r in $(seq "$ROUNDS"); do
  for n in "${NAMES[@]}"; do
    LOADS+=("$(cut -d' ' -f1-3 /proc/loadavg)")
    case $n in
      "routerd-host <-> wireguard-go") v=$(iperf "${P}rl" 10.20.0.50) ;;
      "routerd-host <-> routerd-host") v=$(iperf "${P}hl" 10.20.0.50) ;;
      "wireguard-go <-> wireguard-go") v=$(iperf "${P}wga" 10.30.0.2) ;;
      "boringtun-cli <-> boringtun-cli") v=$(iperf "${P}bta" 10.30.0.2) ;;
    esac
    echo "round $r: $n: $v Mbit/s (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    SUM[$n]=$(awk -v a="${SUM[$n]}" -v b="$v" 'BEGIN { print a + b }')
  done
done

avg() { awk -v s="${SUM[$1]}" -v r="$ROUNDS" 'BEGIN { printf "%.0f", s / r }'; }
WGGO=$(avg "wireguard-go <-> wireguard-go"); BT=$(avg "boringtun-cli <-> boringtun-cli")
echo
echo "Single TCP flow, iperf3 ${SECS}s x $ROUNDS round(s), MTU 1420, $(nproc) CPUs, $(date -u +%F)"
echo "load average at start of each run: ${LOADS[*]}"
echo
printf '| %-32s | %8s | %15s | %15s |\n' "tunnel" "Mbit/s" "vs wireguard-go" "vs boringtun"
printf '|%s|%s|%s|%s|\n' "----------------------------------" "----------" "-----------------" "-----------------"
for n in "${NAMES[@]}"; do
  a=$(avg "$n")
  printf '| %-32s | %8s | %15s | %15s |\n' "$n" "$a" \
    "$(awk -v a="$a" -v b="$WGGO" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')" \
    "$(awk -v a="$a" -v b="$BT" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')"
done
