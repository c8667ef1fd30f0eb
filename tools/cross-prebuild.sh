#!/usr/bin/env bash
# Builds the package's Linux binaries that this Debian machine can make
# (README "Platforms"), into prebuilds/ where npm pack takes them:
#
#   x64    linux-x64 glibc with a floor: compiled inside a Debian 11
#          (bullseye) chroot made by debootstrap, with its gcc 10 and glibc
#          2.31, so the binary needs no GLIBC symbol newer than 2.31 and no
#          GLIBCXX newer than 3.4.28 (Ubuntu 20.04, Debian 11 and later).
#   arm64  linux-arm64 glibc, cross-compiled with Debian's
#          g++-aarch64-linux-gnu (glibc 2.36, Debian 12 and later).
#   smoke  loads the arm64 binary under qemu-user with Debian's arm64 Node
#          and runs a replica round trip through it.
#
#   bash tools/cross-prebuild.sh [x64] [arm64] [smoke]     (default: all three)
#   npm run prebuild:cross
#
# Each binary is checked with objdump -T (tools/check-binary.mjs): its
# architecture and the newest GLIBC/GLIBCXX symbol versions it needs.
# Needs root (debootstrap, chroot, apt-get) and Debian's package registry;
# the chroot and the arm64 Node stay in build-floor/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="$root/build-floor"
mkdir -p "$work"

log() { printf '\n=== %s\n' "$*"; }
die() { echo "cross-prebuild: $*" >&2; exit 1; }

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(x64 arm64 smoke)
wants() { local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, apt-get)"
apt_install() {
  local missing=()
  local p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$work/apt.log" 2>&1 ||
    { apt-get update -q >>"$work/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$work/apt.log" 2>&1; } ||
    { tail -20 "$work/apt.log"; die "could not install ${missing[*]}"; }
}

# What the addon is made of, as binding.gyp says (one list, not two).
mapfile -t sources < <(node -e "const g=JSON.parse(require('fs').readFileSync('binding.gyp','utf8').replace(/#.*$/gm,''));for(const s of g.targets[0].sources)console.log(s)")
# The defines and C++ flags binding.gyp gives node-gyp, and node-gyp's own.
mapfile -t gyp_flags < <(node -e "const g=JSON.parse(require('fs').readFileSync('binding.gyp','utf8').replace(/#.*$/gm,'')).targets[0];for(const d of g.defines)console.log('-D'+d);for(const f of g.cflags_cc)console.log(f)")
node_inc=$(node -p "require('path').join(process.execPath,'..','..','include','node')")
[ -f "$node_inc/node_api.h" ] || node_inc=/usr/include/node
[ -f "$node_inc/node_api.h" ] || die "Node's headers (node_api.h) not found"
addon_api=$(node -p "require('node-addon-api').include_dir")
asio_inc=""
for d in ${ASIO_INCLUDE_DIR:-} /usr/include /usr/local/include; do [ -f "$d/asio.hpp" ] && { asio_inc="$d"; break; }; done
[ -n "$asio_inc" ] || die "standalone Asio headers not found (apt-get install libasio-dev)"
flags=("${gyp_flags[@]}" -fPIC -pthread -DNODE_GYP_MODULE_NAME=nexres -DBUILDING_NODE_EXTENSION
  -D_GLIBCXX_USE_CXX11_ABI=1 -D_FILE_OFFSET_BITS=64 -D_LARGEFILE_SOURCE -DOPENSSL_THREADS)

# build_script <dir> <path of dir as the compiler sees it> <cxx>: writes
# <dir>/build.sh, which compiles every source two at a time and links
# <dir>/nexres.node (run on this machine, or inside the chroot).
build_script() {
  local dir="$1" seen="$2" cxx="$3" s
  local incs="-I$seen/inc/node -I$seen/inc/addon-api -I$seen/inc/asio -I$seen/native/core"
  {
    echo "set -e"
    echo "cd $seen && mkdir -p obj"
    printf 'printf "%%s\\n"'
    for s in "${sources[@]}"; do printf ' %s' "$s"; done
    echo " | xargs -P 2 -I{} sh -c '$cxx ${flags[*]} $incs -c \"\$1\" -o obj/\$(basename \"\$1\" .cpp).o' _ {}"
    printf '%s -shared -pthread -o nexres.node' "$cxx"
    for s in "${sources[@]}"; do printf ' obj/%s.o' "$(basename "${s%.cpp}")"; done
    echo " -lpthread"
  } >"$dir/build.sh"
}

# stage <dir>: the sources and headers the compiler sees.
stage() {
  local dir="$1"
  rm -rf "$dir"
  mkdir -p "$dir/inc" "$dir/native"
  cp -r native/addon native/core "$dir/native/"
  cp -rL "$node_inc" "$dir/inc/node"
  cp -rL "$addon_api" "$dir/inc/addon-api"
  mkdir -p "$dir/inc/asio"
  cp -rL "$asio_inc/asio.hpp" "$asio_inc/asio" "$dir/inc/asio/"
}

check() { node tools/check-binary.mjs "$@"; }

if wants x64; then
  apt_install debootstrap
  chroot_dir="$work/bullseye"
  if [ ! -x "$chroot_dir/usr/bin/g++-10" ]; then
    log "debootstrap Debian 11 (bullseye) with g++ into $chroot_dir"
    rm -rf "$chroot_dir"
    debootstrap --variant=minbase --include=g++,make bullseye "$chroot_dir" http://deb.debian.org/debian \
      >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; die "debootstrap failed"; }
  fi
  log "linux-x64 glibc (floor glibc 2.31): g++ $(chroot "$chroot_dir" g++ -dumpversion) inside bullseye"
  stage "$chroot_dir/src"
  build_script "$chroot_dir/src" /src g++
  chroot "$chroot_dir" sh /src/build.sh
  mkdir -p prebuilds/linux-x64
  cp "$chroot_dir/src/nexres.node" prebuilds/linux-x64/nexres-rpc.glibc.node
  strip --strip-unneeded prebuilds/linux-x64/nexres-rpc.glibc.node
  check prebuilds/linux-x64/nexres-rpc.glibc.node --arch x86-64 --glibc 2.31 --glibcxx 3.4.28
fi

if wants arm64; then
  apt_install g++-aarch64-linux-gnu binutils-aarch64-linux-gnu
  log "linux-arm64 glibc: $(aarch64-linux-gnu-g++ --version | head -1)"
  stage "$work/arm64"
  build_script "$work/arm64" "$work/arm64" aarch64-linux-gnu-g++
  sh "$work/arm64/build.sh"
  mkdir -p prebuilds/linux-arm64
  cp "$work/arm64/nexres.node" prebuilds/linux-arm64/nexres-rpc.glibc.node
  aarch64-linux-gnu-strip --strip-unneeded prebuilds/linux-arm64/nexres-rpc.glibc.node
  check prebuilds/linux-arm64/nexres-rpc.glibc.node --arch aarch64 --objdump aarch64-linux-gnu-objdump
fi

if wants smoke; then
  [ -f prebuilds/linux-arm64/nexres-rpc.glibc.node ] || die "no arm64 binary to smoke-test (run with arm64 first)"
  apt_install qemu-user
  sysroot="$work/arm64-root"
  if [ ! -x "$sysroot/usr/bin/node" ]; then
    log "Debian's arm64 Node and its libraries into $sysroot (unpacked, not installed)"
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -q >"$work/apt-arm64.log" 2>&1 || { tail -5 "$work/apt-arm64.log"; die "apt-get update failed"; }
    mkdir -p "$work/debs" "$sysroot"
    # nodejs:arm64 and everything it depends on, as .deb files.
    # (arm64 packages, and the architecture-independent ones Node loads its
    # builtins from, such as node-cjs-module-lexer).
    all=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
      nodejs:arm64 2>/dev/null | grep -E '^[a-z0-9]' | sort -u)
    deps=$(echo "$all" | grep ':arm64$' || true)
    for n in $(echo "$all" | grep -v ':arm64$'); do
      [ "$(apt-cache show --no-all-versions "$n" 2>/dev/null | awk '/^Architecture:/ { print $2; exit }')" = all ] && deps="$deps $n"
    done
    (cd "$work/debs" && apt-get download $deps >"$work/apt-download.log" 2>&1) ||
      { tail -5 "$work/apt-download.log"; die "could not download nodejs:arm64"; }
    for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$sysroot"; done
  fi
  log "smoke test under qemu-aarch64: $(qemu-aarch64 -L "$sysroot" "$sysroot/usr/bin/node" --version) (Debian's arm64 Node)"
  rm -rf "$work/smoke" && mkdir -p "$work/smoke/node_modules/nexres-rpc/prebuilds/linux-arm64"
  pkg="$work/smoke/node_modules/nexres-rpc"
  cp -r dist package.json "$pkg/"
  cp prebuilds/linux-arm64/nexres-rpc.glibc.node "$pkg/prebuilds/linux-arm64/"
  cp -r node_modules/node-gyp-build "$work/smoke/node_modules/"
  cp tools/smoke-roundtrip.mjs "$work/smoke/"
  (cd "$work/smoke" && timeout 300 qemu-aarch64 -L "$sysroot" "$sysroot/usr/bin/node" smoke-roundtrip.mjs)
fi
