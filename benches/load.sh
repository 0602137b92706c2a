#!/usr/bin/env bash
# Switchyard under load, on loopback, in one run (see BENCHMARKS.md):
#
#   bash benches/load.sh compare    # req/s, CPU per request, p50/p99: direct, switchyard
#                                   # (policy), switchyard (--bypass-policies), nginx (map on
#                                   # the header), HAProxy (ACL on the header)
#   bash benches/load.sh soak       # 60 s of load while the mode flips every 5 s and a new
#                                   # policy version is published every 15 s
#   bash benches/load.sh footprint  # RSS with 1 and 100 functions, per warm instance,
#                                   # and process start to first decision (cold/warm cache)
#   bash benches/load.sh profile    # perf profile of the policy proxy under wrk (where
#                                   # its CPU goes; needs perf)
#   bash benches/load.sh allocs     # heap allocations per request, policy and bypass
#                                   # (perf uprobes on the binary's mimalloc entry points)
#   bash benches/load.sh all
#
# Installs wrk, nginx-light, haproxy and hyperfine from Debian when missing (needs root or sudo),
# builds the release CLI and the synthetic-header policy. Knobs: LOAD_DURATION (5s),
# LOAD_CONNECTIONS (32), LOAD_THREADS (1), LOAD_ROUNDS (10; the five paths take turns each
# round and medians are reported, because this VM drifts by tens of percent between
# minutes), SOAK_SECONDS (60), BASELINE (compare: the path to another build's
# switchyard binary, e.g. an older commit's, served with the same policy and
# flags as a sixth path taking its turn each round, with the ratio of this
# build to it: a change's cost measured in one run, not across runs).
# Results are printed as Markdown tables and kept in target/load/.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-compare}
duration=${LOAD_DURATION:-5s}
conns=${LOAD_CONNECTIONS:-32}
threads=${LOAD_THREADS:-1}
soak_seconds=${SOAK_SECONDS:-60}
rounds=${LOAD_ROUNDS:-10}
# Extra flags for both switchyard serve runs of compare (e.g. --runtime multi-thread).
read -r -a SERVE_FLAGS <<< "${SERVE_FLAGS:-}"
out=target/load
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-load.XXXXXX")
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  [ -f "$work/up/nginx.pid" ] && kill "$(cat "$work/up/nginx.pid")" 2>/dev/null || true
  [ -f "$work/peer/nginx.pid" ] && kill "$(cat "$work/peer/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
log() { echo "== $*" >&2; }

need() { # need <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return
  log "installing $2 (Debian)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q "$2" >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null 2>&1
    $sudo apt-get install -y -q "$2" >/dev/null
  }
}
need wrk wrk
need hyperfine hyperfine
need haproxy haproxy
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need nginx nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
wait_ready() { for _ in $(seq 1 400); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.05; done; echo "switchyard on $1 never got ready" >&2; exit 1; }

log "building the release CLI (first time: compiles wasmtime, minutes)"
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo build -q --release -p switchyard --bin switchyard
S=${CARGO_TARGET_DIR:-$PWD/target}/release/switchyard
wasm=$($S policy build policies/synthetic-header -o "$out/synthetic-header.wasm" | tail -n 1)

# A copy of a component with a custom section appended: the same policy,
# another digest (a "new version" for the soak, one policy per function for
# the footprint).
variant() { # variant <src> <dst> <tag>
  python3 - "$1" "$2" "$3" <<'EOF'
import sys
def leb(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
src, dst, tag = sys.argv[1], sys.argv[2], sys.argv[3].encode()
name = b"switchyard-variant"
body = leb(len(name)) + name + tag
open(dst, "wb").write(open(src, "rb").read() + b"\x00" + leb(len(body)) + body)
EOF
}

# Two stand-in function versions: one nginx worker answering fixed JSON.
p7=$(free_port); p8=$(free_port)
mkdir -p "$work/up/logs"
cat > "$work/up/nginx.conf" <<EOF
worker_processes 1;
pid $work/up/nginx.pid;
error_log $work/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/up/body; proxy_temp_path $work/up/proxy;
  fastcgi_temp_path $work/up/fcgi; uwsgi_temp_path $work/up/uwsgi; scgi_temp_path $work/up/scgi;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$p7; location / { default_type application/json; return 200 '{"version":"7"}'; } }
  server { listen 127.0.0.1:$p8; location / { default_type application/json; return 200 '{"version":"8"}'; } }
}
EOF
"$NGINX" -p "$work/up" -c "$work/up/nginx.conf" -e "$work/up/error.log"
wait_port "$p7"; wait_port "$p8"

route_json() { # route_json <mode>
  cat <<EOF
{"mode":"$1","versions":{"stable":"7","candidate":"8"},
 "flags":{"synthetic-header":"x-switchyard-synthetic"},
 "dispatch":{"type":"http","urls":{"7":"http://127.0.0.1:$p7","8":"http://127.0.0.1:$p8"}}}
EOF
}
store="dir:$work/store"
route_json synthetic > "$work/route.json"
$S publish --store "$store" --function orders --policy "$wasm" --config "$work/route.json" >/dev/null 2>&1

serve() { # serve <port> [flags...]: starts switchyard serve in the background
  local port=$1; shift
  # The admin listener (metrics) at port+1.
  "${SERVE_BIN:-$S}" serve --store "$store" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1))" --decision-log-sample 0 "$@" >/dev/null 2>"$work/serve-$port.log" &
  pids+=($!)
  wait_ready "$port"
}

# wrk once; prints "rps p50_ms p99_ms requests errors".
run_wrk() { # run_wrk <url> <duration>
  local raw
  raw=$(wrk -t"$threads" -c"$conns" -d"$2" --latency -H 'x-switchyard-synthetic: true' "$1")
  echo "$raw" > "$out/wrk-last.txt"
  python3 - "$raw" <<'EOF'
import re, sys
raw = sys.argv[1]
def ms(v):
    n, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", raw).group(1))
p = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", raw, re.M))
reqs = int(re.search(r"(\d+) requests in", raw).group(1))
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", raw))
m = re.search(r"Non-2xx or 3xx responses: (\d+)", raw)
errs += int(m.group(1)) if m else 0
print(f"{rps:.0f} {ms(p['50']):.3f} {ms(p['99']):.3f} {reqs} {errs}")
EOF
}

# CPU ticks of processes and their threads so far: "user system".
cpu_ticks() { # cpu_ticks <pid>...
  local u=0 s=0 pid a b
  for pid in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$pid/stat")
    u=$((u + a)); s=$((s + b))
  done
  echo "$u $s"
}

compare() {
  log "compare: wrk -t$threads -c$conns -d$duration --latency, header x-switchyard-synthetic: true, $rounds interleaved rounds"
  local ps pb pn ph
  ps=$(free_port); pb=$(free_port); pn=$(free_port); ph=$(free_port)
  mkdir -p "$work/peer"
  cat > "$work/peer/nginx.conf" <<EOF
worker_processes $(nproc);
pid $work/peer/nginx.pid;
error_log $work/peer/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/peer/body; proxy_temp_path $work/peer/proxy;
  fastcgi_temp_path $work/peer/fcgi; uwsgi_temp_path $work/peer/uwsgi; scgi_temp_path $work/peer/scgi;
  keepalive_requests 1000000;
  upstream v7 { server 127.0.0.1:$p7; keepalive 64; }
  upstream v8 { server 127.0.0.1:$p8; keepalive 64; }
  map \$http_x_switchyard_synthetic \$version { default v7; "true" v8; "1" v8; }
  map \$version \$traffic { default production; v8 synthetic; }
  server {
    listen 127.0.0.1:$pn;
    location / {
      proxy_pass http://\$version;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header x-switchyard-traffic \$traffic;
    }
  }
}
EOF
  "$NGINX" -p "$work/peer" -c "$work/peer/nginx.conf" -e "$work/peer/error.log"
  # HAProxy: one thread per core, connections to the versions reused
  # across clients, an ACL on the header choosing the backend and setting
  # the traffic class.
  cat > "$work/peer/haproxy.cfg" <<EOF
global
  nbthread $(nproc)
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend switch
  bind 127.0.0.1:$ph
  acl synthetic req.hdr(x-switchyard-synthetic) -i true 1
  http-request set-header x-switchyard-traffic synthetic if synthetic
  http-request set-header x-switchyard-traffic production unless synthetic
  use_backend v8 if synthetic
  default_backend v7
backend v7
  server s7 127.0.0.1:$p7
backend v8
  server s8 127.0.0.1:$p8
EOF
  haproxy -q -f "$work/peer/haproxy.cfg" & pids+=($!)
  local haproxy_pid=$!
  wait_port "$pn"; wait_port "$ph"
  serve "$ps" "${SERVE_FLAGS[@]}"
  local policy_pid=${pids[-1]}
  serve "$pb" --bypass-policies "${SERVE_FLAGS[@]}"
  local bypass_pid=${pids[-1]}
  local baseline_pid="" pbase=""
  if [ -n "${BASELINE:-}" ]; then
    [ -x "$BASELINE" ] || { echo "BASELINE=$BASELINE is not an executable switchyard" >&2; exit 2; }
    pbase=$(free_port)
    SERVE_BIN=$BASELINE serve "$pbase" "${SERVE_FLAGS[@]}"
    baseline_pid=${pids[-1]}
  fi
  # Whose CPU each path is charged: the process doing the routing (for
  # direct, the upstream itself).
  local upstream_pids nginx_pids
  upstream_pids=$(pgrep -P "$(cat "$work/up/nginx.pid")" | tr '\n' ' ')
  nginx_pids=$(pgrep -P "$(cat "$work/peer/nginx.pid")" | tr '\n' ' ')
  declare -A cpu_of=(
    [direct]="$upstream_pids" [policy]="$policy_pid" [bypass]="$bypass_pid"
    [nginx]="$nginx_pids" [haproxy]="$haproxy_pid" [baseline]="$baseline_pid"
  )
  local -a paths=(
    "direct http://127.0.0.1:$p8/x" "policy http://127.0.0.1:$ps/orders/x"
    "bypass http://127.0.0.1:$pb/orders/x" "nginx http://127.0.0.1:$pn/x"
    "haproxy http://127.0.0.1:$ph/x"
  )
  [ -n "$baseline_pid" ] && paths+=("baseline http://127.0.0.1:$pbase/orders/x")
  # Warm every path, then measure each alone.
  local u
  for u in "${paths[@]}"; do run_wrk "${u#* }" 2s >/dev/null; done
  : > "$work/compare"
  local round u0 s0 u1 s1 name
  for round in $(seq 1 "$rounds"); do
    log "round $round of $rounds"
    for u in "${paths[@]}"; do
      name=${u%% *}
      # shellcheck disable=SC2086 # pid lists
      read -r u0 s0 < <(cpu_ticks ${cpu_of[$name]})
      r=$(run_wrk "${u#* }" "$duration")
      # shellcheck disable=SC2086
      read -r u1 s1 < <(cpu_ticks ${cpu_of[$name]})
      # Columns: round path rps p50 p99 requests errors cpu_ticks user_ticks system_ticks
      echo "$round $name $r $((u1 - u0 + s1 - s0)) $((u1 - u0)) $((s1 - s0))" >> "$work/compare"
    done
  done
  cp "$work/compare" "$out/compare.txt"
  python3 - "$work/compare" "$conns" "$duration" "$rounds" "$(getconf CLK_TCK)" "${BASELINE:-}" <<'EOF' | tee "$out/compare.md"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
tck = float(sys.argv[5])
names = {"direct": "direct to the upstream", "policy": "switchyard serve, synthetic-header policy",
         "bypass": "switchyard serve --bypass-policies", "nginx": "nginx, map on the header",
         "haproxy": "HAProxy, ACL on the header"}
if sys.argv[6]:
    names["baseline"] = f"baseline build ({sys.argv[6]}), same policy"
by = {k: [r for r in rows if r[1] == k] for k in names}
# CPU per request in microseconds: the routing process's user + system
# time over the requests wrk completed.
cpu = lambda r: float(r[7]) / tck * 1e6 / max(1, int(r[5]))
med = lambda k, f: statistics.median(f(r) for r in by[k])
user = lambda r: float(r[8]) / tck * 1e6 / max(1, int(r[5]))
system = lambda r: float(r[9]) / tck * 1e6 / max(1, int(r[5]))
print(f"| path ({sys.argv[2]} connections, {sys.argv[3]} x {sys.argv[4]} rounds) | req/s (median) | req/s min-max | CPU us/request (median) | of it user / system | p50 ms | p99 ms | errors |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for k, n in names.items():
    rps = [float(r[2]) for r in by[k]]
    errs = sum(int(r[6]) for r in by[k])
    print(f"| {n} | {med(k, lambda r: float(r[2])):.0f} | {min(rps):.0f}-{max(rps):.0f} | {med(k, cpu):.1f} | {med(k, user):.1f} / {med(k, system):.1f} | {med(k, lambda r: float(r[3])):.3f} | {med(k, lambda r: float(r[4])):.3f} | {errs} |")
print()
def ratio(a, b, f):
    xs = [f(x) / f(y) for x, y in zip(by[a], by[b])]
    return f"median {statistics.median(xs):.3f} (rounds {min(xs):.3f}-{max(xs):.3f})"
rps = lambda r: float(r[2])
print(f"- policy / nginx throughput: {ratio('policy', 'nginx', rps)}; goal >= 1.0")
print(f"- policy / HAProxy throughput: {ratio('policy', 'haproxy', rps)}; goal >= 1.0")
print(f"- policy / bypass throughput: {ratio('policy', 'bypass', rps)}")
print(f"- policy / bypass CPU per request: {ratio('policy', 'bypass', cpu)}; goal <= 1.05")
print(f"- policy / nginx CPU per request: {ratio('policy', 'nginx', cpu)}")
if "baseline" in names:
    print(f"- policy / baseline build throughput: {ratio('policy', 'baseline', rps)}")
    print(f"- policy / baseline build CPU per request: {ratio('policy', 'baseline', cpu)}")
EOF
}

soak() {
  log "soak: ${soak_seconds}s of wrk in 1 s windows; mode flip every 5 s, new policy version every 15 s"
  local ps; ps=$(free_port)
  variant "$wasm" "$work/v1.wasm" soak-1
  serve "$ps" --poll-interval 1s
  (
    t=0; n=0
    while [ "$t" -lt "$soak_seconds" ]; do
      sleep 5; t=$((t + 5))
      if [ $((t % 15)) = 0 ]; then
        n=$((n + 1))
        if [ $((n % 2)) = 1 ]; then p="$work/v1.wasm"; else p="$wasm"; fi
        $S publish --store "$store" --function orders --policy "$p" --config "$work/route.json" >/dev/null 2>&1
        echo "$t publish" >> "$work/events"
      else
        if [ $((t / 5 % 2)) = 1 ]; then m=production; else m=synthetic; fi
        $S mode --store "$store" orders "$m" >/dev/null 2>&1
        echo "$t mode $m" >> "$work/events"
      fi
    done
  ) & pids+=($!)
  swaps() { curl -s "http://127.0.0.1:$((ps + 1))/metrics" | awk '/^switchyard_swaps_total\{function="orders"\}/ {print $2}'; }
  : > "$work/windows"
  local before after i
  for i in $(seq 1 "$soak_seconds"); do
    before=$(swaps)
    r=$(run_wrk "http://127.0.0.1:$ps/orders/x" 1s)
    after=$(swaps)
    echo "$r ${before:-0} ${after:-0}" >> "$work/windows"
  done
  python3 - "$work/windows" "$soak_seconds" <<'EOF' | tee "$out/soak.md"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
total = sum(int(r[3]) for r in rows)
errors = sum(int(r[4]) for r in rows)
swapped = [float(r[2]) for r in rows if float(r[6]) > float(r[5])]
calm = [float(r[2]) for r in rows if float(r[6]) <= float(r[5])]
def cell(xs): return f"{statistics.median(xs):.3f} / {max(xs):.3f}" if xs else "n/a"
print(f"| soak ({sys.argv[2]} x 1 s windows) | value |")
print("|---|---:|")
print(f"| requests | {total} |")
print(f"| errors (socket + non-2xx) | {errors} |")
print(f"| windows with a swap | {len(swapped)} |")
print(f"| p99 ms in windows with a swap (median / worst) | {cell(swapped)} |")
print(f"| p99 ms in windows without (median / worst) | {cell(calm)} |")
EOF
}

profile() {
  log "profile: perf record -g of switchyard serve (policy) under wrk for $duration"
  command -v perf >/dev/null 2>&1 || need perf linux-perf
  local ps; ps=$(free_port)
  serve "$ps" "${SERVE_FLAGS[@]}"
  local pid=${pids[-1]}
  run_wrk "http://127.0.0.1:$ps/orders/x" 2s >/dev/null
  perf record -F 999 -g -o "$out/perf.data" -p "$pid" -- sleep "${duration%s}" >/dev/null 2>&1 &
  local perf_pid=$!
  run_wrk "http://127.0.0.1:$ps/orders/x" "$duration" >/dev/null
  wait "$perf_pid" || true
  {
    echo "== where the CPU goes, by object"
    perf report -i "$out/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | cut -c1-60 | head -8
    echo "== the hottest symbols"
    perf report -i "$out/perf.data" --no-children --percent-limit 0.4 --stdio -g none --sort dso,symbol 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | cut -c1-140 | head -40
  } | tee "$out/profile.txt"
  if command -v strace >/dev/null 2>&1; then
    log "system calls per request (strace -c -f, 3 s of wrk; strace slows the proxy, the counts per request hold)"
    strace -c -f -p "$pid" -o "$out/strace.txt" & local strace_pid=$!
    sleep 0.5
    local n
    n=$(run_wrk "http://127.0.0.1:$ps/orders/x" 3s | cut -d' ' -f4)
    kill -INT "$strace_pid" 2>/dev/null; wait "$strace_pid" 2>/dev/null || true
    awk -v n="$n" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ {printf "%-16s %6.2f per request\n", $NF, $4 / n}' "$out/strace.txt" \
      | sort -k2 -nr | head -6 | tee -a "$out/profile.txt"
  fi
}

allocs() {
  log "allocs: heap allocations per request (perf uprobes on the binary's allocator, mimalloc: mi_malloc_aligned, mi_zalloc_aligned, mi_realloc_aligned; and on libc's malloc, which C code may still call), policy and bypass"
  command -v perf >/dev/null 2>&1 || need perf linux-perf
  local libc event events=() mode ps pid n counts
  # The binary served (SERVE_BIN, named switchyard, for another build's).
  local bin=${SERVE_BIN:-$S}
  libc=$(ldd "$bin" | awk '/libc\.so/ {print $3}')
  perf probe -q -d 'probe_switchyard:*' 2>/dev/null || true   # an earlier run's, maybe on another binary
  for event in mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned; do
    perf probe -q -x "$bin" "$event" 2>/dev/null || true
    events+=(-e "probe_switchyard:$event")
  done
  perf probe -q -x "$libc" malloc 2>/dev/null || true
  events+=(-e probe_libc:malloc)
  echo "| path (wrk -c$conns, 3 s) | requests | alloc / request | alloc_zeroed / request | realloc / request | libc malloc / request |"
  echo "|---|---:|---:|---:|---:|---:|"
  for mode in policy bypass; do
    ps=$(free_port)
    if [ "$mode" = bypass ]; then serve "$ps" --bypass-policies "${SERVE_FLAGS[@]}"; else serve "$ps" "${SERVE_FLAGS[@]}"; fi
    pid=${pids[-1]}
    run_wrk "http://127.0.0.1:$ps/orders/x" 2s >/dev/null
    perf stat -x, "${events[@]}" -p "$pid" -o "$work/allocs-$mode.csv" -- sleep 4 &
    local stat_pid=$!
    sleep 0.5
    n=$(run_wrk "http://127.0.0.1:$ps/orders/x" 3s | cut -d' ' -f4)
    wait "$stat_pid" || true
    counts=$(awk -F, -v n="$n" '/probe_(switchyard|libc)/ {printf " %.1f |", $1 / n}' "$work/allocs-$mode.csv")
    echo "| $mode | $n |$counts"
    if [ -n "${ALLOC_SITES:-}" ]; then # where they come from: call stacks of 1 s of allocations
      perf record -q -e probe_switchyard:mi_malloc_aligned --call-graph dwarf,16384 -o "$work/allocs-$mode.data" -p "$pid" -- sleep 1 >/dev/null 2>&1 &
      local rec_pid=$!
      run_wrk "http://127.0.0.1:$ps/orders/x" 2s >/dev/null
      wait "$rec_pid" || true
      perf report -i "$work/allocs-$mode.data" --no-children --stdio -g folded,0,caller,count --percent-limit 1 2>/dev/null \
        | grep -v '^#' | grep -v '^$' > "$out/alloc-sites-$mode.txt" || true
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  done | tee "$out/allocs.md"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

footprint() {
  log "footprint: 100 functions, each its own policy (same code, distinct digests)"
  local fstore="dir:$work/fstore" i f
  for i in $(seq -w 1 100); do
    variant "$wasm" "$work/p$i.wasm" "f$i"
    $S publish --store "$fstore" --function "f$i" --policy "$work/p$i.wasm" --config "$work/route.json" >/dev/null 2>&1
  done
  local p1 p100 pid1 pid100 rss1 rss100_loaded rss100_warm
  p1=$(free_port); p100=$(free_port)
  $S serve --store "$fstore" --listen "127.0.0.1:$p1" --admin-listen off --function f001 --decision-log-sample 0 >/dev/null 2>&1 & pid1=$!; pids+=($pid1)
  wait_ready "$p1"
  curl -s -o /dev/null "http://127.0.0.1:$p1/f001/x"
  rss1=$(rss_kib "$pid1")
  $S serve --store "$fstore" --listen "127.0.0.1:$p100" --admin-listen "127.0.0.1:$((p100 + 1))" --decision-log-sample 0 >/dev/null 2>&1 & pid100=$!; pids+=($pid100)
  for _ in $(seq 1 600); do
    [ "$(curl -s "http://127.0.0.1:$((p100 + 1))/healthz" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["functions"]))' 2>/dev/null)" = 100 ] && break
    sleep 0.1
  done
  rss100_loaded=$(rss_kib "$pid100")
  for i in $(seq -w 1 100); do curl -s -o /dev/null "http://127.0.0.1:$p100/f$i/x"; done
  rss100_warm=$(rss_kib "$pid100")

  log "start to first decision: switchyard decide --store ... (hyperfine)"
  local dec="$S decide --store $fstore --function f001 -H 'x-switchyard-synthetic: true'"
  $S decide --store "$fstore" --function f001 --cache-dir "$work/warm" >/dev/null
  hyperfine -N --warmup 3 --runs 30 --export-json "$out/start.json" \
    -n "process floor (switchyard --version)" "$S --version" \
    -n "first decision, precompiled cache" "$dec --cache-dir $work/warm" \
    -n "first decision, no cache (compile)" "$dec" >/dev/null 2>&1
  python3 - "$rss1" "$rss100_loaded" "$rss100_warm" "$out/start.json" <<'EOF' | tee "$out/footprint.md"
import json, sys
rss1, loaded, warm = (int(x) for x in sys.argv[1:4])
print("| footprint | value |")
print("|---|---:|")
print(f"| RSS, 1 function, warm | {rss1 / 1024:.1f} MiB |")
print(f"| RSS, 100 functions loaded | {loaded / 1024:.1f} MiB |")
print(f"| RSS, 100 functions, one warm instance each | {warm / 1024:.1f} MiB (goal <= 64) |")
print(f"| per warm instance ((warm - loaded) / 100) | {(warm - loaded) / 100:.0f} KiB (goal <= 128) |")
print(f"| per loaded policy ((loaded - 1 fn) / 99) | {(loaded - rss1) / 99:.0f} KiB |")
print()
print("| process start to first decision (hyperfine, 30 runs) | median ms | min ms | max ms |")
print("|---|---:|---:|---:|")
for r in json.load(open(sys.argv[4]))["results"]:
    print(f"| {r['command']} | {r['median'] * 1000:.2f} | {r['min'] * 1000:.2f} | {r['max'] * 1000:.2f} |")
EOF
}

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee "$out/machine.txt" >&2
case "$what" in
  compare) compare ;;
  soak) soak ;;
  footprint) footprint ;;
  profile) profile ;;
  allocs) allocs ;;
  all) compare; soak; footprint ;;
  *) echo "usage: bash benches/load.sh [compare|soak|footprint|profile|allocs|all]" >&2; exit 2 ;;
esac
