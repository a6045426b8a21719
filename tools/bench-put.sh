#!/usr/bin/env bash
# Put latency and throughput with etcd's own load tool (tools/benchmark of etcd 3.4.23, built by
# ../shared/tools/build-etcd-benchmark.sh), side by side: every server named on the command line
# is started fresh, loaded, and stopped, round after round, so all of them share the machine's
# noise; the medians over the rounds are printed at the end.
#
#   tools/bench-put.sh [--members 1|3] [--rounds N] NAME=SERVER_BINARY...
#   tools/bench-put.sh --members 3 --rounds 5 before=/tmp/cairn-old now=target/release/cairn etcd=etcd
#
# Each server gets the same etcd flags (cairn takes etcd's), a fresh data directory under /tmp,
# and these loads (the ones in docs/performance.md):
#   1 client over 1 connection, 2000 sequential 8-byte keys, 256-byte values
#   100 clients over 10 connections, 20000 puts of the same shape
set -euo pipefail

members=1
rounds=3
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --members) members="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *=*) targets+=("$1"); shift ;;
    *) echo "usage: $0 [--members 1|3] [--rounds N] NAME=SERVER_BINARY..." >&2; exit 2 ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || { echo "name at least one NAME=SERVER_BINARY" >&2; exit 2; }
[ "$members" = 1 ] || [ "$members" = 3 ] || { echo "--members is 1 or 3" >&2; exit 2; }
command -v etcd-benchmark >/dev/null || { echo "etcd-benchmark missing: run ../shared/tools/build-etcd-benchmark.sh" >&2; exit 2; }

work=$(mktemp -d /tmp/bench-put.XXXXXX)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'stop_all; rm -rf "$work"' EXIT

client_port() { echo $((32379 + 1000 * $1)); }
peer_port() { echo $((32380 + 1000 * $1)); }

start() { # binary
  local bin="$1" cluster="" i
  for i in $(seq 1 "$members"); do cluster+="${cluster:+,}m$i=http://127.0.0.1:$(peer_port "$i")"; done
  for i in $(seq 1 "$members"); do
    "$bin" --name "m$i" --data-dir "$work/m$i" \
      --listen-client-urls "http://127.0.0.1:$(client_port "$i")" \
      --advertise-client-urls "http://127.0.0.1:$(client_port "$i")" \
      --listen-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
      --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token bench >"$work/m$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$(client_port 1)" put bench-ready 1 >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$bin did not start; its log:" >&2; cat "$work/m1.log" >&2; exit 1
}

endpoints() { local e="" i; for i in $(seq 1 "$members"); do e+="${e:+,}127.0.0.1:$(client_port "$i")"; done; echo "$e"; }

load() { # conns clients total -> "puts/s avg_ms"
  local out
  out=$(etcd-benchmark --endpoints="$(endpoints)" --conns="$1" --clients="$2" \
    put --key-size=8 --sequential-keys --total="$3" --val-size=256 2>&1)
  awk '/Requests\/sec:/ {rps=$2} /Average:/ {avg=$2*1000} END {printf "%.0f %.2f\n", rps, avg}' <<<"$out"
}

declare -A results
for r in $(seq 1 "$rounds"); do
  for t in "${targets[@]}"; do
    name="${t%%=*}"; bin="${t#*=}"
    rm -rf "$work"/m*
    start "$bin"
    one=$(load 1 1 2000)
    many=$(load 10 100 20000)
    stop_all
    results[$name]+="$one $many"$'\n'
    echo "round $r $name: 1 client ${one% *} puts/s ${one#* } ms avg; 100 clients ${many% *} puts/s ${many#* } ms avg" >&2
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
printf '\n%d member(s), %d rounds, medians\n' "$members" "$rounds"
printf '%-10s %16s %14s %18s %16s\n' server "1 client puts/s" "1 client avg" "100 clients puts/s" "100 clients avg"
for t in "${targets[@]}"; do
  name="${t%%=*}"
  rows="${results[$name]}"
  printf '%-10s %16s %11s ms %18s %13s ms\n' "$name" \
    "$(awk 'NF {print $1}' <<<"$rows" | median)" "$(awk 'NF {print $2}' <<<"$rows" | median)" \
    "$(awk 'NF {print $3}' <<<"$rows" | median)" "$(awk 'NF {print $4}' <<<"$rows" | median)"
done
