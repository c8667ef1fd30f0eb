#!/usr/bin/env bash
# Makes a fresh Debian/Ubuntu machine ready to build and run nexres-rpc from
# a clone: installs what is missing (standalone Asio from libasio-dev, a C++
# toolchain, CMake), the npm dependencies, builds the addon from source and
# compiles the TypeScript. Used by .ci/run and tools/demo.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n=== %s\n' "$*"; }

missing=()
if [ -z "${ASIO_INCLUDE_DIR:-}" ] && [ ! -f /usr/include/asio.hpp ] && [ ! -f /usr/local/include/asio.hpp ]; then
  missing+=(libasio-dev)
fi
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# The native-only build (core tests, benchmarks) links the system OpenSSL;
# the addon uses the OpenSSL inside Node (its headers come with Node's).
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (Asio, OpenSSL headers and build tools)"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "nexres-rpc: missing ${missing[*]}; install them with your package manager (macOS: brew install asio cmake)" >&2
    exit 1
  fi
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq || exit 1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null || exit 1
fi

# The chaos run (npm run chaos, .ci/run) gives each replica a network
# namespace when it runs as root with iproute2's `ip`; without it, it uses
# loopback proxies instead. Best effort: a failure here is not fatal.
if [ "$(id -u)" = 0 ] && ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  log "installing iproute2 (network namespaces for npm run chaos)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; } ||
    echo "nexres-rpc: iproute2 could not be installed; npm run chaos will use loopback proxies" >&2
fi

log "npm dependencies"
npm ci --ignore-scripts --no-audit --no-fund || exit 1

log "build the addon's binaries from source and compile TypeScript"
# As root on Debian (CI): the binaries the package ships (README
# "Platforms"), linux-x64 inside a Debian 11 chroot (its glibc floor) and
# linux-arm64 cross-compiled, into prebuilds/, where the tests load the x64
# one and test/package-install.test.ts packs both. Elsewhere this machine's
# own (prebuildify: build/Release copied to prebuilds/).
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(uname -m)" = x86_64 ]; then
  bash tools/cross-prebuild.sh x64 arm64 || exit 1
else
  npm run prebuild --silent || exit 1
fi
npm run build:ts --silent || exit 1
