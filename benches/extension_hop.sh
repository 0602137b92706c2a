#!/usr/bin/env bash
# What the mesh extension (`switchyard-extension`) costs a function, as Lambda runs it under
# `cargo lambda watch --only-lambda-apis` (pip install --no-deps cargo-lambda):
#  1. per invocation: a no-op Python function invoked directly (its runtime polls the watch)
#     and through the extension's Runtime API proxy (its runtime started by
#     host/lambda/switchyard-wrapper), in alternating rounds; latency per invocation from a
#     keep-alive client;
#  2. the extension's init (process start to `ready`) with an empty /tmp cache (the policy is
#     fetched from a dir: store and compiled) and with the cache the last run left.
#
#   bash benches/extension_hop.sh      # ROUNDS=6 x CALLS=300 invocations; INIT_RUNS=10
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-6}
calls=${CALLS:-300}
init_runs=${INIT_RUNS:-10}
target_dir=${CARGO_TARGET_DIR:-target}
. benches/common.sh

release_build switchyard switchyard-extension
sy="$target_dir/release/switchyard"
ext="$(cd "$target_dir/release" && pwd)/switchyard-extension"
publish_orders '{"mode":"synthetic","versions":{"stable":"1","candidate":"2"},
 "dispatch":{"type":"http","urls":{"1":"http://127.0.0.1:9","2":"http://127.0.0.1:9"}}}'

# watch invokes only functions named like a binary of the Cargo project it runs in.
mkdir -p "$work/proj/src"
echo 'fn main() {}' > "$work/proj/src/main.rs"
printf '[package]\nname = "fns"\nversion = "0.0.0"\nedition = "2021"\n[[bin]]\nname = "noop"\npath = "src/main.rs"\n' > "$work/proj/Cargo.toml"
port=$(free_port)
(cd "$work/proj" && exec cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$port") >/dev/null 2>&1 &
pids+=($!)
wait_port "$port"
rt="http://127.0.0.1:$port/.rt"
fns=host/lambda/tests/support/functions

two_ports() { python3 -c 'import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])'; }
start_extension() { # start_extension <cache dir> <mesh port> <runtime proxy port>; pid in $ext_pid
  rm -f "$work/ext.log"; : > "$work/ext.log"   # never read the last run's lines
  AWS_LAMBDA_RUNTIME_API="$rt" SWITCHYARD_RUNTIME_UPSTREAM="$rt/noop" \
  SWITCHYARD_STORE="$store" SWITCHYARD_FUNCTIONS=orders SWITCHYARD_CACHE_DIR="$1" \
  SWITCHYARD_PORT="$2" SWITCHYARD_RUNTIME_PROXY_PORT="$3" "$ext" 2>> "$work/ext.log" &
  ext_pid=$!
  pids+=("$ext_pid")
  for _ in $(seq 1 400); do grep -q '"event":"ready"' "$work/ext.log" && return; sleep 0.01; done
  echo "the extension never got ready: $(cat "$work/ext.log")" >&2; exit 1
}

# 1. Per-invocation latency, direct and through the Runtime API proxy.
time_calls() { # time_calls <label> -> latencies (µs), one a line, in $work/<label>
  python3 - "$port" "$calls" >> "$work/$1" <<'PY'
import http.client, sys, time
port, calls = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
path = "/2015-03-31/functions/noop/invocations"
for i in range(calls + 20):
    t = time.perf_counter()
    c.request("POST", path, body=b"{}")
    r = c.getresponse(); body = r.read()
    assert r.status == 200 and b"ok" in body, (r.status, body)
    if i >= 20:  # warm-up
        print(round((time.perf_counter() - t) * 1e6))
PY
}
run_function() { # run_function direct|proxied <runtime proxy port>
  if [ "$1" = direct ]; then
    (cd "$fns/python" && AWS_LAMBDA_RUNTIME_API="$rt/noop" exec python3 ../runtime.py noop.handler) &
  else
    (cd "$fns/python" && SWITCHYARD_RUNTIME_PROXY_PORT="$2" exec sh ../../../../lambda/switchyard-wrapper python3 ../runtime.py noop.handler) &
  fi
  fn_pid=$!
  pids+=("$fn_pid")
}
: > "$work/direct"; : > "$work/proxied"
read -r mesh rproxy < <(two_ports)
start_extension "$work/cache" "$mesh" "$rproxy"
for r in $(seq 1 "$rounds"); do
  log "round $r/$rounds"
  for mode in direct proxied; do
    run_function "$mode" "$rproxy"
    time_calls "$mode"
    kill "$fn_pid"; wait "$fn_pid" 2>/dev/null || true
  done
done
kill "$ext_pid"; wait "$ext_pid" 2>/dev/null || true

# 2. The extension's init, cold and warm.
ready_ms() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try: d = json.loads(line)
    except ValueError: continue
    if isinstance(d, dict) and d.get("event") == "ready": print(round(d["init_ms"], 1))' "$work/ext.log"; }
: > "$work/cold"; : > "$work/warm"
for i in $(seq 1 "$init_runs"); do
  rm -rf "$work/icache"
  for kind in cold warm; do
    read -r p1 p2 < <(two_ports)
    start_extension "$work/icache" "$p1" "$p2"
    ready_ms >> "$work/$kind"
    kill "$ext_pid"; wait "$ext_pid" 2>/dev/null || true
  done
done

pct() { sort -n "$1" | awk -v p="$2" '{a[NR]=$1} END {i=int(NR*p/100); if (i<1) i=1; print a[i]}'; }
d50=$(pct "$work/direct" 50); p50=$(pct "$work/proxied" 50)
echo "| no-op Python function, $((rounds * calls)) invocations each | p50 (µs) | p90 (µs) | p99 (µs) |"
echo "|---|---:|---:|---:|"
for mode in direct proxied; do
  echo "| $mode | $(pct "$work/$mode" 50) | $(pct "$work/$mode" 90) | $(pct "$work/$mode" 99) |"
done
python3 -c "import sys; d,p=float(sys.argv[1]),float(sys.argv[2]); print(f'\nproxied/direct at p50: {p/d:.2f}x (+{p-d:.0f} µs)')" "$d50" "$p50"
echo
echo "| extension init, $init_runs runs each | ready (ms), median |"
echo "|---|---:|"
echo "| empty /tmp cache (fetch + compile) | $(median < "$work/cold") |"
echo "| warm /tmp cache | $(median < "$work/warm") |"
