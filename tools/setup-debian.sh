#!/usr/bin/env bash
# Installs the system packages the build needs on Debian 12 / Ubuntu 22.04+ (idempotent).
#   libclang-dev  bindgen in oqs-sys (liboqs bindings)
#   cmake         builds liboqs (ML-DSA only)
#   make          builds jemalloc (tikv-jemalloc-sys: the C heap under RocksDB)
#   librocksdb-dev  RocksDB 7.8 shared library: linked instead of compiling ~18 min of C++
#   curl jq       the operations walkthrough (tests/ops/three-node-loopback.sh, run by .ci/run)
set -euo pipefail
pkgs=(libclang-dev cmake make librocksdb-dev clang pkg-config curl jq)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "system packages ok: ${pkgs[*]}"
