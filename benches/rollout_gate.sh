#!/usr/bin/env bash
# How long a rollout takes to notice a failing candidate: from the moment it
# starts failing to the rollback written to the store, with the router's guard
# (serve --guard-writes) and with the gates alone (see BENCHMARKS.md).
#
#   bash benches/rollout_gate.sh
#
# Two `switchyard serve` hosts on one dir: store, sticky-canary at a 50 %
# canary step, a real Prometheus scraping both every second, curl load from
# distinct users (about 50 requests/s), and `switchyard rollout start` with
# gates read from Prometheus (check-every 1s, min-requests 10,
# max-error-rate 0.05). Each round, once the step has baked 3 s, the candidate
# starts answering 500; the time until `switchyard status` shows it out is
# measured. Knobs: GATE_ROUNDS (5), SWITCHYARD_BIN (default
# target/debug/switchyard: the figures are intervals and windows, not CPU).
# Needs prometheus (Debian), curl, python3; results in target/rollout-gate/.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${GATE_ROUNDS:-5}
bin=${SWITCHYARD_BIN:-target/debug/switchyard}
[ -x "$bin" ] || cargo build -p switchyard
out=target/rollout-gate
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-gate.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A version that answers 200, or 500 while its flag file exists.
cat > "$work/upstream.py" <<'EOF'
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, flag = int(sys.argv[1]), sys.argv[2]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        status = 500 if os.path.exists(flag) else 200
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
stable_port=$(free_port); cand_port=$(free_port)
python3 "$work/upstream.py" "$stable_port" "$work/never" & pids+=($!)
python3 "$work/upstream.py" "$cand_port" "$work/failing" & pids+=($!)

"$bin" policy build policies/sticky-canary -o "$work/sc.wasm" >/dev/null 2>&1

measure() { # mode: gate | guard
    local mode=$1 store="dir:$work/store-$1" guard='' serve_flags=()
    if [ "$mode" = guard ]; then
        guard=', "guard": {"max-error-rate": 0.05, "min-requests": 10, "window": "30s"}'
        serve_flags=(--guard-writes)
    fi
    cat > "$work/route-$mode.json" <<EOF
{"mode": "production", "versions": {"stable": "7", "candidate": "8"},
 "dispatch": {"type": "http", "urls": {"7": "http://127.0.0.1:$stable_port", "8": "http://127.0.0.1:$cand_port"}}$guard}
EOF
    "$bin" publish --store "$store" --function orders --policy "$work/sc.wasm" --config "$work/route-$mode.json" >/dev/null
    local ports=() admins=() hosts=()
    for _ in 1 2; do
        local p a
        p=$(free_port); a=$(free_port)
        "$bin" serve --store "$store" --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$a" \
            --poll-interval 200ms "${serve_flags[@]}" >/dev/null 2>"$work/serve-$mode-$p.log" & hosts+=($!)
        ports+=("$p"); admins+=("$a")
    done
    pids+=("${hosts[@]}")
    for a in "${admins[@]}"; do
        until curl -sf "http://127.0.0.1:$a/healthz" >/dev/null; do sleep 0.1; done
    done
    local prom_port
    prom_port=$(free_port)
    cat > "$work/prom-$mode.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: switchyard
    static_configs: [{targets: ["127.0.0.1:${admins[0]}", "127.0.0.1:${admins[1]}"]}]
EOF
    prometheus --config.file "$work/prom-$mode.yml" --storage.tsdb.path "$work/tsdb-$mode" \
        --web.listen-address "127.0.0.1:$prom_port" >/dev/null 2>&1 & local prom=$!
    pids+=("$prom")
    until curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null; do sleep 0.2; done
    # Load: distinct users on both hosts, about 50 requests a second.
    ( i=0; while :; do
        curl -s -o /dev/null -H "x-user-id: u$i" "http://127.0.0.1:${ports[$((i % 2))]}/orders/cart"
        i=$((i + 1)); sleep 0.02
      done ) & local load=$!
    pids+=("$load")
    cat > "$work/plan.json" <<'EOF'
{"check-every": "1s", "stages": [
  {"stage": "canary", "percent": 50, "bake": "120s",
   "gates": {"min-requests": 10, "max-error-rate": 0.05, "max-wait": "60s"}},
  {"stage": "promote"}]}
EOF
    for r in $(seq 1 "$rounds"); do
        rm -f "$work/failing"
        "$bin" set orders --store "$store" --version candidate=8 >/dev/null 2>&1 || true
        local began
        began=$(python3 -c 'import time; print(int(time.time() * 1000))')
        "$bin" rollout start orders --store "$store" --plan "$work/plan.json" \
            --prometheus "http://127.0.0.1:$prom_port" >/dev/null 2>"$work/rollout-$mode-$r.log" &
        local runner=$!
        local state
        until state=$("$bin" rollout status orders --store "$store" --json 2>/dev/null |
            python3 -c 'import json,sys
try: s = json.load(sys.stdin)
except ValueError: sys.exit()  # no rollout yet
if s["started-ms"] < int(sys.argv[1]): sys.exit()  # the previous one
print("over" if s["phase"] != "running" else "baking" if s["baked-seconds"] >= 3 else "")' "$began") &&
            [ -n "$state" ]; do
            sleep 0.1
        done
        if [ "$state" = over ]; then
            echo "$mode round $r: the rollout ended before the candidate failed: $(tail -1 "$work/rollout-$mode-$r.log")" | tee -a "$out/results.txt"
            wait "$runner" || true
            continue
        fi
        local t0 t1
        t0=$(date +%s.%N)
        touch "$work/failing"
        until "$bin" status orders --store "$store" 2>/dev/null |
            python3 -c 'import json,sys; sys.exit(0 if "candidate" not in json.load(sys.stdin)[0]["versions"] else 1)'; do
            sleep 0.05
        done
        t1=$(date +%s.%N)
        wait "$runner" || true
        local by
        by=$(tail -1 "$work/rollout-$mode-$r.log" | grep -q "switchyard guard" && echo guard || echo gate)
        python3 -c "print(f'$mode round $r: {($t1 - $t0):.2f} s, rolled back by the $by')" | tee -a "$out/results.txt"
        echo "$t1 - $t0" | python3 -c 'import sys; a,b=sys.stdin.read().split(" - "); print(float(a)-float(b))' >> "$out/$mode.txt"
    done
    kill "$load" "$prom" "${hosts[@]}" 2>/dev/null || true
}

: > "$out/results.txt"; : > "$out/gate.txt"; : > "$out/guard.txt"
measure gate
measure guard
python3 - "$out" <<'EOF'
import statistics, sys
out = sys.argv[1]
print("\n| rolled back by | rounds | median | min | max |\n|---|---|---|---|---|")
for mode, label in (("guard", "the guard (serve --guard-writes)"), ("gate", "the gate (Prometheus, check-every 1s)")):
    xs = [float(l) for l in open(f"{out}/{mode}.txt") if l.strip()]
    print(f"| {label} | {len(xs)} | {statistics.median(xs):.2f} s | {min(xs):.2f} s | {max(xs):.2f} s |")
EOF
