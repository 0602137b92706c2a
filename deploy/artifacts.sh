#!/usr/bin/env bash
# Builds Switchyard's two Lambda artifacts for provided.al2023 and checks them:
#
#   target/artifacts/<arch>/switchyard-router.zip           the router function: bootstrap
#   target/artifacts/<arch>/switchyard-extension-layer.zip  the mesh extension layer:
#       extensions/switchyard-extension and switchyard-wrapper (/opt/... in Lambda)
#
# Usage: bash deploy/artifacts.sh [x86_64|arm64|all]     (default: x86_64)
#
# It cross-compiles with cargo-lambda and zig (PyPI: cargo-lambda, ziglang)
# against glibc 2.34, AL2023's, so the binaries load there whatever glibc the
# build machine has; then deploy/check_artifacts.py checks each zip: the ELF
# machine of every binary is its architecture's, the newest GLIBC_ symbol
# version it needs is at most 2.34, the layout is the one Lambda expects
# (executables at the right paths, mode 755), and it prints each zip's size.
# A release build takes about 12 minutes per architecture on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC=2.34
case "${1:-x86_64}" in
  x86_64) arches=(x86_64) ;;
  arm64) arches=(arm64) ;;
  all) arches=(x86_64 arm64) ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "deploy/artifacts.sh: unknown architecture '$1' (x86_64, arm64 or all)" >&2; exit 2 ;;
esac

# What the build needs, each missing piece named with the command that installs it.
need() { echo "deploy/artifacts.sh: $1 is missing; install it with: $2" >&2; exit 1; }
command -v cargo-lambda >/dev/null || need "cargo-lambda" "python3 -m pip install 'cargo-lambda==1.9.2' 'ziglang==0.13.0.post1'"
python3 -m ziglang version >/dev/null 2>&1 || command -v zig >/dev/null ||
  need "zig" "python3 -m pip install 'ziglang==0.13.0.post1'"
command -v readelf >/dev/null || need "readelf" "apt-get install binutils"
command -v zip >/dev/null || need "zip" "apt-get install zip"

for arch in "${arches[@]}"; do
  case "$arch" in
    x86_64) triple=x86_64-unknown-linux-gnu ;;
    arm64) triple=aarch64-unknown-linux-gnu ;;
  esac
  rustup target list --installed 2>/dev/null | grep -qx "$triple" ||
    need "the Rust target $triple" "rustup target add $triple"

  echo "== $arch: cargo lambda build --release --target $triple.$GLIBC (router function and extension)"
  # One cargo invocation builds both binaries (one compile of their
  # dependencies); cargo-lambda moves each to <lambda-dir>/<bin>/bootstrap,
  # one lambda-dir per architecture, and the zips are made here.
  bin="target/lambda/$arch"
  cargo lambda build --release --target "$triple.$GLIBC" --lambda-dir "$bin" \
    --bin switchyard-lambda --bin switchyard-extension

  out="target/artifacts/$arch"
  stage="$out/stage"
  rm -rf "$out"
  mkdir -p "$stage/router" "$stage/layer/extensions"
  install -m 755 "$bin/switchyard-lambda/bootstrap" "$stage/router/bootstrap"
  install -m 755 "$bin/switchyard-extension/bootstrap" "$stage/layer/extensions/switchyard-extension"
  install -m 755 host/lambda/switchyard-wrapper "$stage/layer/switchyard-wrapper"
  # -X: no extra attributes (uid/gid, times beyond the one), so the zip
  # depends on the files only.
  (cd "$stage/router" && zip -q -X -r "../../switchyard-router.zip" bootstrap)
  (cd "$stage/layer" && zip -q -X -r "../../switchyard-extension-layer.zip" extensions switchyard-wrapper)
  rm -rf "$stage"
done

python3 deploy/check_artifacts.py --glibc "$GLIBC" "${arches[@]}"
