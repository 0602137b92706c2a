#!/usr/bin/env bash
# The main job: the Switchyard proxy routing real requests, on the embedded
# default store (a local folder). It builds the CLI and the synthetic-header
# policy, tests and publishes the policy, starts two stand-in versions of a
# function "orders" (7 = stable, 8 = candidate) and the proxy in front of
# them, then sends requests, flips the mode and rolls it back, live, and ends
# by measuring the decision latency and what the proxy adds to a request.
#
#   bash policies/demo.sh          # then keeps serving on http://127.0.0.1:8080 until Ctrl-C
#   bash policies/demo.sh --once   # stops after the tour (CI runs this)
#
# The proxy is a release build, as it would be deployed (the first build
# takes about 12 minutes on 2 cores). SWITCHYARD_DEMO_PROFILE=debug uses the
# debug build the tests share instead (CI does; its timings are not
# representative).
set -euo pipefail
cd "$(dirname "$0")/.."
once=${1:-}
port=${SWITCHYARD_DEMO_PORT:-8080}
admin_port=${SWITCHYARD_DEMO_ADMIN_PORT:-$((port + 1))}
stable_port=${SWITCHYARD_DEMO_STABLE_PORT:-9101}
candidate_port=${SWITCHYARD_DEMO_CANDIDATE_PORT:-9102}
for p in "$port" "$admin_port" "$stable_port" "$candidate_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "error: port $p is already in use; free it or set SWITCHYARD_DEMO_PORT / SWITCHYARD_DEMO_ADMIN_PORT / SWITCHYARD_DEMO_STABLE_PORT / SWITCHYARD_DEMO_CANDIDATE_PORT" >&2
    exit 1
  fi
done

# The toolchain rust-toolchain.toml pins (with the wasm32 target), when rustup
# does not install it by itself (RUSTUP_AUTO_INSTALL=0).
rustup toolchain install >/dev/null 2>&1 || rustup toolchain install
profile=${SWITCHYARD_DEMO_PROFILE:-release}
# Where cargo puts the binaries (a shared CARGO_TARGET_DIR included).
bin_dir=${CARGO_TARGET_DIR:-target}
case "$profile" in
  release)
    echo "== building the switchyard CLI, release (the first build compiles wasmtime: about 12 minutes)" >&2
    cargo build -q --release -p switchyard --bin switchyard
    S=$bin_dir/release/switchyard ;;
  debug)
    echo "== building the switchyard CLI, debug (shares the test build's artifacts)" >&2
    cargo build -q --workspace
    S=$bin_dir/debug/switchyard ;;
  *) echo "error: SWITCHYARD_DEMO_PROFILE is release or debug, not $profile" >&2; exit 1 ;;
esac
store=dir:target/demo-store
rm -rf target/demo-store && mkdir -p target

echo "== switchyard policy build policies/synthetic-header" >&2
wasm=$($S policy build policies/synthetic-header -o target/synthetic-header.wasm | tail -n 1)
echo "== switchyard policy test $wasm policies/synthetic-header/cases.json" >&2
$S policy test "$wasm" policies/synthetic-header/cases.json | tail -n 1

route=target/demo-orders.json
sed -e "s/127.0.0.1:9101/127.0.0.1:$stable_port/" -e "s/127.0.0.1:9102/127.0.0.1:$candidate_port/" \
  policies/demo/orders.json > "$route"
echo "== switchyard publish --store $store --function orders --config $route" >&2
$S publish --store "$store" --function orders --policy "$wasm" \
  --config "$route" --cases policies/synthetic-header/cases.json

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
python3 policies/demo/upstream.py "$stable_port" 7 & pids+=($!)
python3 policies/demo/upstream.py "$candidate_port" 8 & pids+=($!)

# The proxy's log (a decision line per request) goes to a file; the tour
# shows the line of each request it sends.
log=target/demo-serve.log
echo "== switchyard serve --store $store --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin_port --poll-interval 1s 2> $log" >&2
$S serve --store "$store" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" --poll-interval 1s >/dev/null 2> "$log" & pids+=($!)
ready=
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 \
     && (exec 3<>"/dev/tcp/127.0.0.1/$stable_port") 2>/dev/null \
     && (exec 3<>"/dev/tcp/127.0.0.1/$candidate_port") 2>/dev/null; then
    ready=1; break
  fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "error: the proxy or the stand-in versions did not start" >&2; exit 1; }

decisions() { grep -c 'switchyard::decision' "$log" || true; }
# A request, its answer, and the decision line the proxy logged for it.
answer=
show() {
  local before; before=$(decisions)
  echo "\$ curl $*" >&2
  answer=$(curl -sS "$@") || answer=
  echo "$answer"
  [ "$(decisions)" -gt "$before" ] && grep 'switchyard::decision' "$log" | tail -n 1 | sed 's/^/   proxy log: /' >&2
  return 0
}
# The last answer's FIELD is VALUE (its JSON, e.g. version 8), or the demo
# fails: the tour checks the routing it shows.
expect() {
  python3 - "$1" "$2" "$answer" <<'EOF' || { echo "error: the demo did not route as it says (see above)" >&2; exit 1; }
import json, sys
field, want, text = sys.argv[1:4]
try:
    got = json.loads(text).get(field)
except ValueError:
    sys.exit(f"error: the answer is not JSON: {text!r}")
if got != want:
    sys.exit(f"error: {field} is {got!r}, expected {want!r}")
EOF
}
# Polls (quietly, up to 5 s) until a request with ARGS is answered by
# VERSION: a store change is live within a poll (1 s here).
until_version() {
  local want=$1; shift
  for _ in $(seq 1 50); do
    [ "$(curl -sS "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("version"))' 2>/dev/null)" = "$want" ] && return 0
    sleep 0.1
  done
  return 0
}
echo "== a QA request tagged synthetic reaches the candidate, tagged synthetic" >&2
show -X POST "http://127.0.0.1:$port/orders/api/orders" -H 'x-switchyard-synthetic: true' -d '{"item":1}'
expect version 8; expect traffic synthetic
echo "== an ordinary request reaches stable" >&2
show -X POST "http://127.0.0.1:$port/orders/api/orders" -d '{"item":2}'
expect version 7; expect traffic production
echo "== the decision alone, for any language: the decide API, on the admin listener (context values hidden)" >&2
show -X POST "http://127.0.0.1:$admin_port/v1/decide" -d '{"function":"orders","headers":{"x-switchyard-synthetic":"1"}}'
expect target 8; expect traffic synthetic

echo "== switchyard mode orders production: live within one poll" >&2
$S mode --store "$store" orders production >/dev/null
until_version 7 "http://127.0.0.1:$port/orders/api/orders" -H 'x-switchyard-synthetic: true'
show "http://127.0.0.1:$port/orders/api/orders" -H 'x-switchyard-synthetic: true'
expect version 7
echo "== switchyard rollback orders: synthetic mode again" >&2
$S rollback --store "$store" orders >/dev/null
until_version 8 "http://127.0.0.1:$port/orders/api/orders" -H 'x-switchyard-synthetic: true'
show "http://127.0.0.1:$port/orders/api/orders" -H 'x-switchyard-synthetic: true'
expect version 8
$S status --store "$store" orders >&2

burst=${SWITCHYARD_DEMO_BURST:-2000}
echo "== how fast: $burst QA requests through the proxy, then $burst straight to the candidate (one keep-alive connection each)" >&2
skip=$(decisions)
python3 - "$port" "$candidate_port" "$burst" "$log" "$skip" "$profile" <<'EOF'
import http.client, json, re, sys, time
port, direct, n, log, skip, profile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
def burst(p, path, headers):
    c = http.client.HTTPConnection("127.0.0.1", p)
    took = []
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", path, headers=headers)
        r = c.getresponse(); body = r.read()
        took.append(time.perf_counter() - t)
        assert r.status == 200, r.status
        # Tagged requests reach the candidate, through the proxy or not.
        assert json.loads(body)["version"] == "8", body
    return sorted(took)
tag = {"x-switchyard-synthetic": "true"}
proxied = burst(port, "/orders/api/orders", tag)
straight = burst(direct, "/api/orders", tag)
q = lambda xs, f: xs[min(len(xs) - 1, int(f * len(xs)))]
lines = [l for l in open(log) if "switchyard::decision" in l][skip:]
evals = sorted(int(m.group(1)) for l in lines if (m := re.search(r"eval_ns=(\d+)", l)))
us = lambda s: f"{s * 1e6:.0f} us"
if evals:
    print(f"decision (eval_ns in the {len(evals)} decision lines, {profile} build): p50 {q(evals, .5) / 1000:.1f} us, p99 {q(evals, .99) / 1000:.1f} us", file=sys.stderr)
print(f"request through the proxy: p50 {us(q(proxied, .5))}, p99 {us(q(proxied, .99))}", file=sys.stderr)
print(f"request straight to the candidate: p50 {us(q(straight, .5))}, p99 {us(q(straight, .99))}", file=sys.stderr)
print(f"the proxy adds (p50 through - p50 straight): {us(q(proxied, .5) - q(straight, .5))}, the policy's decision included", file=sys.stderr)
EOF

if [ "$once" = "--once" ]; then
  echo "== done" >&2
  exit 0
fi
echo "== serving on http://127.0.0.1:$port (store $store); try curl http://127.0.0.1:$port/orders/x; Ctrl-C stops" >&2
wait
