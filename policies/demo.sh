#!/usr/bin/env bash
# The main job: the Switchyard proxy routing real requests, on the embedded
# default store (a local folder). It builds the CLI and the synthetic-header
# policy, tests and publishes the policy, starts two stand-in versions of a
# function "orders" (7 = stable, 8 = candidate) and the proxy in front of
# them, then sends requests, flips the mode and rolls it back, live.
#
#   bash policies/demo.sh          # then keeps serving on http://127.0.0.1:8080 until Ctrl-C
#   bash policies/demo.sh --once   # stops after the tour (CI runs this)
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

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
echo "== building the switchyard CLI (the first build compiles wasmtime: minutes)" >&2
cargo build -q --workspace  # the whole workspace: shares the test build's artifacts
S=target/debug/switchyard
store=dir:target/demo-store
rm -rf target/demo-store

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

echo "== switchyard serve --store $store --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin_port --poll-interval 1s" >&2
$S serve --store "$store" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" --poll-interval 1s >/dev/null & pids+=($!)
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

show() { echo "\$ curl $*" >&2; curl -sS "$@"; echo; }
echo "== a QA request tagged synthetic reaches the candidate, tagged synthetic" >&2
show -X POST "http://127.0.0.1:$port/orders/api/orders" -H 'x-switchyard-synthetic: true' -d '{"item":1}'
echo "== an ordinary request reaches stable" >&2
show -X POST "http://127.0.0.1:$port/orders/api/orders" -d '{"item":2}'
echo "== the decision alone, for any language: the decide API, on the admin listener (context values hidden)" >&2
show -X POST "http://127.0.0.1:$admin_port/v1/decide" -d '{"function":"orders","headers":{"x-switchyard-synthetic":"1"}}'

echo "== switchyard mode orders production: live within one poll" >&2
$S mode --store "$store" orders production >/dev/null
sleep 1.5
show "http://127.0.0.1:$port/orders/api/orders" -H 'x-switchyard-synthetic: true'
echo "== switchyard rollback orders: synthetic mode again" >&2
$S rollback --store "$store" orders >/dev/null
sleep 1.5
show "http://127.0.0.1:$port/orders/api/orders" -H 'x-switchyard-synthetic: true'
$S status --store "$store" orders >&2

if [ "$once" = "--once" ]; then
  echo "== done" >&2
  exit 0
fi
echo "== serving on http://127.0.0.1:$port (store $store); try curl http://127.0.0.1:$port/orders/x; Ctrl-C stops" >&2
wait
