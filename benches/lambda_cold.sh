#!/usr/bin/env bash
# Cold start of the router function (`switchyard-lambda`), as Lambda runs it: process start
# to `ready` (init done) and to the first response, with an empty /tmp cache (the policy is
# fetched and compiled) and with a warm one (the precompiled policy is deserialized; what a
# restarted execution environment sees). The Runtime and Invoke APIs come from
# `cargo lambda watch --only-lambda-apis` (pip install --no-deps cargo-lambda); the store is a
# dir: store and the function versions are a local HTTP server, so only the router is timed.
#
#   bash benches/lambda_cold.sh            # COLD_RUNS=10 runs of each; medians in target/load/
#   COLD_STORE=ssm bash benches/lambda_cold.sh       # the store in SSM (AWS_ENDPOINT_URL: an emulator)
#   COLD_STORE=snapshot bash benches/lambda_cold.sh  # the same, its hosts reading a fleet snapshot in S3
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${COLD_RUNS:-10}
target_dir=${CARGO_TARGET_DIR:-target}
out=target/load
mkdir -p "$out"
. benches/common.sh

case "${COLD_STORE:-dir}" in
  dir) ;;
  ssm) export BENCH_STORE="ssm:/cold$$" ;;
  snapshot)
    python3 -c "import boto3; boto3.client('s3').create_bucket(Bucket='sy-cold-$$')"
    export BENCH_STORE="ssm:/cold$$?snapshot=s3://sy-cold-$$/fleet.snap" ;;
  *) echo "COLD_STORE is dir, ssm or snapshot" >&2; exit 2 ;;
esac

release_build switchyard switchyard-lambda
sy="$target_dir/release/switchyard"
router="$target_dir/release/switchyard-lambda"

up=$(free_port)
python3 -m http.server "$up" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
pids+=($!)
publish_orders '{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},
 "dispatch":{"type":"http","urls":{"7":"http://127.0.0.1:'"$up"'","8":"http://127.0.0.1:'"$up"'"}}}'

port=$(free_port)
cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$port" >/dev/null 2>&1 &
pids+=($!)
wait_port "$port"
event='{"version":"2.0","rawPath":"/","rawQueryString":"","headers":{"x-switchyard-synthetic":"true"},"requestContext":{"http":{"method":"GET"}}}'

one_run() { # one_run <cache dir> -> "<init_ms> <first_response_ms>"
  AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt/switchyard-lambda" \
  AWS_LAMBDA_FUNCTION_NAME=switchyard-lambda AWS_LAMBDA_FUNCTION_VERSION=1 \
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512 SWITCHYARD_STORE="$store" SWITCHYARD_FUNCTION=orders \
  SWITCHYARD_CACHE_DIR="$1" "$router" 2> "$work/router.log" &
  local pid=$!
  curl -sf --max-time 30 -d "$event" \
    "http://127.0.0.1:$port/2015-03-31/functions/switchyard-lambda/invocations" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$work/router.log" <<'PY'
import json, sys
ev = {}
for line in open(sys.argv[1]):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if isinstance(d, dict) and "event" in d:
        ev[d["event"]] = d
print(f'{ev["ready"]["init_ms"]:.1f} {ev["first-response"]["since_start_ms"]:.1f}')
PY
}

: > "$work/cold"; : > "$work/warm"; : > "$work/stale"
stale_cache() { # stale_cache <cache dir>: its .cwasm files claim an older wasmtime, as after an upgrade
  python3 - "$1" "$(grep -A1 '^name = "wasmtime"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')" <<'PY'
import pathlib, struct, sys
root, major = pathlib.Path(sys.argv[1]), sys.argv[2].split(".")[0]
older = str(int(major) - 1).rjust(len(major), "0").encode()
def engine_section(elf):  # file offset of the ELF64 section .wasmtime.engine
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    size, count, names = struct.unpack_from("<HHH", elf, 0x3A)
    hdr = lambda i: struct.unpack_from("<IIQQQQ", elf, shoff + i * size)
    strtab = hdr(names)[4]
    for i in range(count):
        name = elf[strtab + hdr(i)[0]:].split(b"\0", 1)[0]
        if name == b".wasmtime.engine":
            return hdr(i)[4]
for f in root.glob("compiled/*.cwasm"):
    code = bytearray(f.read_bytes())
    at = engine_section(code)   # a format byte, a length byte, wasmtime's major release
    assert code[at + 2:at + 2 + code[at + 1]] == major.encode(), f"{f}: not wasmtime {major}'s"
    code[at + 2:at + 2 + len(older)] = older
    f.write_bytes(code)
PY
}
for i in $(seq 1 "$runs"); do
  rm -rf "$work/cache"
  one_run "$work/cache" >> "$work/cold"     # empty cache: fetch + compile
  one_run "$work/cache" >> "$work/warm"     # the cache the cold run left
  stale_cache "$work/cache"
  one_run "$work/cache" >> "$work/stale"    # another wasmtime's cache: refused, recompiled
done
{
  echo "| router function, ${COLD_STORE:-dir} store, $runs runs each | init (ms) | first response (ms) |"
  echo "|---|---|---|"
  echo "| empty /tmp cache (compile) | $(cut -d' ' -f1 "$work/cold" | median) | $(cut -d' ' -f2 "$work/cold" | median) |"
  echo "| warm /tmp cache (deserialize) | $(cut -d' ' -f1 "$work/warm" | median) | $(cut -d' ' -f2 "$work/warm" | median) |"
  echo "| another wasmtime's /tmp cache (refused, compile) | $(cut -d' ' -f1 "$work/stale" | median) | $(cut -d' ' -f2 "$work/stale" | median) |"
} | tee "$out/lambda_cold.md"
