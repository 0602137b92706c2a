#!/usr/bin/env bash
# The main job, for now: build the CLI and the synthetic-header policy, test it
# against its fixture cases, and decide sample requests with it.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
echo "== building the switchyard CLI (the first build compiles wasmtime: minutes)" >&2
cargo build -q -p switchyard
S=target/debug/switchyard

echo "== switchyard policy build policies/synthetic-header" >&2
wasm=$($S policy build policies/synthetic-header -o target/synthetic-header.wasm | tail -n 1)

echo "== switchyard policy inspect $wasm" >&2
$S policy inspect "$wasm"

echo "== switchyard policy test $wasm policies/synthetic-header/cases.json" >&2
$S policy test "$wasm" policies/synthetic-header/cases.json

route=policies/synthetic-header/route.json
echo "== a QA request tagged synthetic (function in synthetic mode: $route)" >&2
$S decide --policy "$wasm" --config "$route" --function orders -X POST --path /orders \
  -H 'X-Switchyard-Synthetic: true'

echo "== an ordinary request" >&2
$S decide --policy "$wasm" --config "$route" --function orders -X POST --path /orders

echo "== the same tagged request once the function is back in production mode" >&2
prod=$(mktemp)
sed 's/"synthetic"/"production"/' "$route" > "$prod"
$S decide --policy "$wasm" --config "$prod" --function orders -H 'X-Switchyard-Synthetic: true'
rm -f "$prod"
