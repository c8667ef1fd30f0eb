#!/usr/bin/env bash
# Fuzzes the frame decoder and the handshakes (docs/SECURITY.md "Fuzzing"):
# builds the libFuzzer targets of native/fuzz with clang (ASan + UBSan, the
# core instrumented for coverage) in build-fuzz/, replays the saved
# reproducers of native/fuzz/crashes/, then runs each target for a share of a
# bounded total time.
#
#   bash tools/fuzz.sh [SECONDS]        (npm run fuzz -- SECONDS)
#   NEXRES_FUZZ_SECONDS=300 npm run fuzz
#
# SECONDS (default 60) is the fuzzing time of all targets together. Corpora
# grow in build-fuzz/corpus-<target> (seeded from native/fuzz/seeds/<target>);
# a crash leaves its input in build-fuzz/crashes/ and the script exits 1.
# Exit 2: the toolchain or the build is missing.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n=== %s\n' "$*"; }

total="${1:-${NEXRES_FUZZ_SECONDS:-60}}"
if ! [[ "$total" =~ ^[0-9]+$ ]] || [ "$total" -lt 3 ]; then
  echo "fuzz.sh: the time must be a whole number of seconds (>= 3), got '$total'" >&2
  exit 2
fi
build=build-fuzz
targets=(fuzz_decoders fuzz_replica_session fuzz_client_session fuzz_replica_session_mac fuzz_replica_session_seal fuzz_replica_link)
# Share of the time per target, in percent: the socket targets run ~1000
# inputs/s (the mac ones fewer: a handshake with X25519 and Ed25519 per
# input; fuzz_replica_link also waits for the link's reconnect), the
# decoders ~100000 and saturate within seconds.
shares=(8 18 18 18 20 18)

# ---- toolchain: Debian's clang and its libFuzzer runtime -------------------
fuzzer_links() {
  local dir
  dir=$(mktemp -d) || return 1
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' >"$dir/t.cpp"
  clang++ -fsanitize=fuzzer,address,undefined "$dir/t.cpp" -o "$dir/t" >/dev/null 2>&1
  local rc=$?
  rm -rf "$dir"
  return $rc
}

missing=()
command -v clang++ >/dev/null 2>&1 || missing+=(clang)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
[ -f /usr/include/asio.hpp ] || [ -f /usr/local/include/asio.hpp ] || [ -n "${ASIO_INCLUDE_DIR:-}" ] || missing+=(libasio-dev)
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ] || ! fuzzer_links; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "fuzz.sh: needs clang with libFuzzer (and ${missing[*]:-nothing else}); install them with your package manager" >&2
    exit 2
  fi
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  log "installing clang and its libFuzzer runtime ${missing[*]}"
  started=$(date +%s)
  $SUDO apt-get update -qq || { echo "fuzz.sh: apt-get update failed" >&2; exit 2; }
  # Debian 12's clang is 14; its libFuzzer runtime is libclang-rt-14-dev.
  pkgs=("${missing[@]}")
  if command -v clang++ >/dev/null 2>&1; then
    major=$(clang++ --version | grep -Eo 'version [0-9]+' | head -1 | grep -Eo '[0-9]+')
  else
    major=$(apt-cache show clang 2>/dev/null | grep -E '^Depends:' | grep -Eo 'clang-[0-9]+' | head -1 | grep -Eo '[0-9]+')
  fi
  [ -n "${major:-}" ] && pkgs+=("libclang-rt-${major}-dev")
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null ||
    { echo "fuzz.sh: apt-get install ${pkgs[*]} failed" >&2; exit 2; }
  echo "installed ${pkgs[*]} in $(( $(date +%s) - started )) s"
  if ! fuzzer_links; then
    echo "fuzz.sh: clang++ still cannot link -fsanitize=fuzzer (libFuzzer runtime missing)" >&2
    exit 2
  fi
fi
clang++ --version | head -1

# ---- build --------------------------------------------------------------
log "build the fuzz targets in $build/"
started=$(date +%s)
if ! { CC=clang CXX=clang++ cmake -S native -B "$build" -DNEXRES_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
       cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target "${targets[@]}"; } >"$build.log" 2>&1; then
  tail -40 "$build.log"
  echo "fuzz.sh: the build failed (full log: $build.log)" >&2
  exit 2
fi
mv -f "$build.log" "$build/build.log"
echo "built in $(( $(date +%s) - started )) s"

mkdir -p "$build/crashes"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=0
summary=()

# ---- known reproducers: still crashing? ------------------------------------
for t in "${targets[@]}"; do
  dir="native/fuzz/crashes/$t"
  [ -d "$dir" ] || continue
  for f in "$dir"/*; do
    [ -f "$f" ] || continue
    if timeout -k 5 60 "$build/$t" -runs=1 "$f" >"$build/replay.log" 2>&1; then
      summary+=("$t: saved reproducer $f no longer crashes (fixed: keep it as a regression input)")
    else
      failed=1
      reason=$(grep -E '^nexres fuzz:|^SUMMARY:|ERROR: AddressSanitizer|runtime error' "$build/replay.log" | head -2 | tr '\n' ' ')
      summary+=("$t: CRASH (known, unfixed) reproducer $f -- $reason")
    fi
  done
done

# ---- fuzz ---------------------------------------------------------------
for i in "${!targets[@]}"; do
  t="${targets[$i]}"
  secs=$(( total * ${shares[$i]} / 100 ))
  [ "$secs" -ge 1 ] || secs=1
  corpus="$build/corpus-$t"
  mkdir -p "$corpus"
  log "$t for ${secs} s (corpus $corpus, seeds native/fuzz/seeds/$t)"
  # -max_total_time bounds the run; timeout(1) bounds a run that hangs
  # anyway (an input stuck past -timeout is itself reported as a crash).
  timeout -k 10 $(( secs + 60 )) "$build/$t" \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=3072 \
    -dict=native/fuzz/nexres.dict -print_final_stats=1 \
    -artifact_prefix="$build/crashes/$t-" \
    "$corpus" "native/fuzz/seeds/$t" >"$build/$t.log" 2>&1
  rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$build/$t.log" | tail -1)
  execs=$(grep -E '^stat::number_of_executed_units' "$build/$t.log" | grep -Eo '[0-9]+$')
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$build/$t.log" | tail -1)
  corp=$(find "$corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ] && [ -n "$done_line" ]; then
    eps=$(echo "$done_line" | grep -Eo 'exec/s: [0-9]+' | grep -Eo '[0-9]+')
    summary+=("$t: ok, ${execs:-?} inputs in ${secs} s (${eps:-?} exec/s), ${cov:-cov: ?}, corpus ${corp} files")
  else
    failed=1
    repro=$(grep -Eo 'Test unit written to [^ ]+' "$build/$t.log" | tail -1 | sed 's/Test unit written to //')
    reason=$(grep -E '^nexres fuzz:|^SUMMARY:|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error|ERROR: libFuzzer' "$build/$t.log" | head -3 | tr '\n' ' ')
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && reason="killed by timeout(1) after $(( secs + 60 )) s; $reason"
    summary+=("$t: CRASH (exit $rc) after ${execs:-?} inputs, ${cov:-cov: ?}: ${reason:-see log}")
    summary+=("    reproducer: ${repro:-none written} (replay: $build/$t ${repro:-INPUT}); log: $build/$t.log")
    grep -E '^ +#[0-9]+ 0x' "$build/$t.log" | grep -v -E 'libFuzzer|fuzzer::|libc\.so|__sanitizer|_start' | head -12
  fi
done

log "fuzz summary (${total} s)"
printf '%s\n' "${summary[@]}"
exit "$failed"
