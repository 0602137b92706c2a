#!/usr/bin/env bash
# The hardening issue's scenarios, rerun against a release `switchyard serve`
# on loopback with a dir: store (results go to BENCHMARKS.md by hand):
#
#   bash benches/hardening.sh restart   # 10,000 cached routes naming one policy: restart time, RSS
#   bash benches/hardening.sh sockets   # ulimit -n 1024, 1,100 idle sockets: ordinary requests and polls
#   bash benches/hardening.sh hammer    # a policy that burns its budget, hammered: other functions' p99, log volume
#   bash benches/hardening.sh all
#
# Needs wrk and python3; builds the release CLI and the policies it uses.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

cargo build -q --release -p switchyard --bin switchyard
S=${CARGO_TARGET_DIR:-$PWD/target}/release/switchyard
sh_wasm=$($S policy build policies/synthetic-header -o "$work/synthetic-header.wasm" | tail -n 1)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }

# A dir store with <n> functions, each a route naming <wasm> (written as
# files: publishing 10,000 versions through the CLI would take minutes).
make_store() { # make_store <dir> <n> <wasm> <upstream-url>
  python3 - "$@" <<'EOF'
import hashlib, json, os, shutil, sys
root, n, wasm, url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
data = open(wasm, "rb").read()
hexd = hashlib.sha256(data).hexdigest()
os.makedirs(f"{root}/policies", exist_ok=True)
shutil.copy(wasm, f"{root}/policies/sha256-{hexd}.wasm")
route = {"mode": "synthetic", "versions": {"stable": "7", "candidate": "8"},
         "policy": f"sha256:{hexd}", "dispatch": {"type": "http", "urls": {"7": url, "8": url}}}
for i in range(n):
    d = f"{root}/functions/f{i:05d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/1.json", "w") as f:
        json.dump(route, f)
EOF
}

# Seconds until the admin listener on <port> lists <n> functions.
wait_functions() { # wait_functions <admin-port> <n> <start>
  while true; do
    got=$(curl -s "http://127.0.0.1:$1/healthz" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["functions"]))' 2>/dev/null || echo 0)
    [ "$got" = "$2" ] && break
    sleep 0.05
  done
  python3 -c "print(round($(now) - $3, 2))"
}

upstream() { # a tiny HTTP upstream on <port>
  python3 - "$1" <<'EOF' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else 40 ms delayed-ACK stalls show up as our p99
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
  pids+=($!)
}

restart() {
  log "restart: 10,000 functions naming one policy, served with --cache-dir, then restarted"
  local up p a pid t0 first second rss
  up=$(free_port); upstream "$up"
  make_store "$work/store10k" 10000 "$sh_wasm" "http://127.0.0.1:$up"
  p=$(free_port); a=$(free_port)
  t0=$(now)
  $S serve --store "dir:$work/store10k" --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$a" \
    --cache-dir "$work/cache" --decision-log-sample 0 >/dev/null 2>"$work/restart1.log" & pid=$!; pids+=($pid)
  first=$(wait_functions "$a" 10000 "$t0")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  t0=$(now)
  # Polling every second: each poll reads 10,000 route files.
  $S serve --store "dir:$work/store10k" --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$a" \
    --cache-dir "$work/cache" --poll-interval 1s --decision-log-sample 0 >/dev/null 2>"$work/restart2.log" & pid=$!; pids+=($pid)
  second=$(wait_functions "$a" 10000 "$t0")
  rss=$(rss_kib "$pid")
  local p99
  p99=$(wrk -t1 -c16 -d10s --latency "http://127.0.0.1:$p/f00000/x" | awk '/ 99%/ {print $2}')
  echo "| restart with 10,000 cached routes, one policy | first start (empty cache) ${first} s | restart ${second} s | RSS after restart $((rss / 1024)) MiB | request p99 while polling 10,000 functions every 1 s: ${p99} |"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

sockets() {
  log "sockets: ulimit -n 1024, 1,100 idle connections, then an ordinary request and a store change"
  local up p a out
  up=$(free_port); upstream "$up"
  make_store "$work/store1" 1 "$sh_wasm" "http://127.0.0.1:$up"
  p=$(free_port); a=$(free_port)
  # Only the server runs under the limit (soft and hard: it cannot raise it).
  bash -c "ulimit -n 1024; exec $S serve --store dir:$work/store1 --listen 127.0.0.1:$p --admin-listen 127.0.0.1:$a --poll-interval 1s --decision-log-sample 0" \
    >/dev/null 2>"$work/sockets.log" & local spid=$!; pids+=($spid)
  until curl -sf "http://127.0.0.1:$p/healthz" >/dev/null; do sleep 0.05; done
  out=$(
    python3 - "$p" "$S" "$work/store1" "$spid" <<'EOF'
import socket, subprocess, sys, time
port, S, store, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
idle = []
for _ in range(1100):
    s = socket.socket(); s.setblocking(False)
    try: s.connect(("127.0.0.1", port))
    except BlockingIOError: pass
    idle.append(s)
time.sleep(3)  # let the server accept up to its cap
def get(headers=()):
    t = time.time()
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %header{x-switchyard-target}", "--max-time", "60",
                        *sum((["-H", h] for h in headers), []), f"http://127.0.0.1:{port}/f00000/x"], capture_output=True, text=True)
    return r.stdout.strip(), round(time.time() - t, 2)
first = get(["x-switchyard-synthetic: true"])
# A store change, picked up by the poller despite the descriptors held.
subprocess.run([S, "mode", "--store", f"dir:{store}", "f00000", "production"], capture_output=True)
t = time.time(); after = None
while time.time() - t < 30:
    after = get(["x-switchyard-synthetic: true"])
    if after[0].endswith(" 7"): break
    time.sleep(0.2)
fds = len(__import__("os").listdir(f"/proc/{pid}/fd"))
print(f"| ulimit -n 1024, 1,100 idle sockets | first request {first[0]} in {first[1]} s | mode flip seen ({after[0]}) {round(time.time() - t, 2)} s after | server fds {fds} |")
EOF
  )
  echo "$out"
  grep -c "Too many open files" "$work/sockets.log" | sed 's/^/  "Too many open files" lines in the log: /'
}

hammer() {
  log "hammer: f-loop's policy burns its whole budget on every call; f-good's p99 with and without wrk on f-loop"
  local up p a pid loop_wasm base hammered bytes
  up=$(free_port); upstream "$up"
  loop_wasm=$($S policy build policies/bad-loop -o "$work/bad-loop.wasm" | tail -n 1)
  make_store "$work/storeh" 1 "$sh_wasm" "http://127.0.0.1:$up"
  make_store "$work/storel" 1 "$loop_wasm" "http://127.0.0.1:$up"
  mv "$work/storeh/functions/f00000" "$work/storeh/functions/good"
  mkdir -p "$work/storeh/functions/loop"
  cp "$work/storel/functions/f00000/1.json" "$work/storeh/functions/loop/1.json"
  cp "$work"/storel/policies/*.wasm "$work/storeh/policies/"
  p=$(free_port); a=$(free_port)
  $S serve --store "dir:$work/storeh" --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$a" \
    --poll-interval 1s --decision-log-sample 0 >/dev/null 2>"$work/hammer.log" & pid=$!; pids+=($pid)
  until curl -sf "http://127.0.0.1:$p/healthz" >/dev/null; do sleep 0.05; done
  p99() { wrk -t1 -c16 -d"$1" --latency "http://127.0.0.1:$p/good/x" | awk '/ 99%/ {print $2}'; }
  base=$(p99 10s)
  # The control: the same load on a function whose policy is fine.
  mkdir -p "$work/storeh/functions/good2"
  cp "$work/storeh/functions/good/1.json" "$work/storeh/functions/good2/1.json"
  until curl -sf -o /dev/null "http://127.0.0.1:$p/good2/x"; do sleep 0.2; done
  wrk -t1 -c32 -d15s "http://127.0.0.1:$p/good2/x" >/dev/null & local w=$!
  sleep 2
  local control
  control=$(p99 10s)
  wait $w
  wrk -t1 -c32 -d15s "http://127.0.0.1:$p/loop/x" >/dev/null & w=$!
  sleep 2
  hammered=$(p99 10s)
  wait $w
  bytes=$(wc -c < "$work/hammer.log")
  local opened
  opened=$(curl -s "http://127.0.0.1:$a/metrics" | awk '/^switchyard_policy_circuit_total\{.*function="loop".*state="open"/ {print $2}')
  echo "| a budget-burning policy hammered (wrk -c32, 15 s) | other function's p99: ${base} alone, ${control} beside the same load on a good policy, ${hammered} beside the budget-burning one | log ${bytes} bytes | circuit opened ${opened:-0} times |"
}

case "$what" in
  restart) restart ;;
  sockets) sockets ;;
  hammer) hammer ;;
  all) restart; sockets; hammer ;;
  *) echo "usage: $0 restart|sockets|hammer|all" >&2; exit 2 ;;
esac
