# Shared by the bench scripts: source it after `cd` to the repository root.
# Sets up a scratch folder ($work) and a list of background pids ($pids) that
# are cleaned up on exit, and small helpers for ports and logging.
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-bench.XXXXXX")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
log() { echo "== $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# release_build BIN...: cargo-lambda (to serve the Lambda APIs), the wasm target, and the
# release builds of the switchyard binaries named.
release_build() {
  command -v cargo-lambda >/dev/null || python3 -m pip install --quiet --no-deps 'cargo-lambda==1.9.2'
  log "building the release $* (first time: minutes)"
  rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
  local bins=()
  for b in "$@"; do bins+=(--bin "$b"); done
  cargo build -q --release "${bins[@]}"
}
# publish_orders ROUTE_JSON: synthetic-header built by the release CLI ($sy) and published
# for function `orders` with ROUTE_JSON as its route config to a dir: store (or BENCH_STORE), named in $store.
publish_orders() {
  local wasm
  wasm=$("$sy" policy build policies/synthetic-header | tail -1)
  printf '%s\n' "$1" > "$work/route.json"
  store="${BENCH_STORE:-dir:$work/store}"
  "$sy" publish --store "$store" --function orders --policy "$wasm" --config "$work/route.json" >/dev/null
}
