#!/usr/bin/env bash
# Builds and runs the fuzz targets on the STABLE toolchain with libFuzzer (libfuzzer-sys):
# rustc's stable codegen flags add the sanitizer-coverage instrumentation libFuzzer reads,
# which is what `cargo fuzz build --sanitizer none` does, without nightly or cargo-fuzz.
#
#   tests/fuzz/fuzz.sh build                      build every target (release, debug asserts)
#   tests/fuzz/fuzz.sh run TARGET [libFuzzer flags] fuzz one target (Ctrl-C to stop)
#   tests/fuzz/fuzz.sh all SECONDS [JOBS]         every target for SECONDS each, JOBS at a time
#                                                 (default 2); fails if any target crashed
#   tests/fuzz/fuzz.sh list                       the target names
#
# Seeds (generated from the test fixtures, committed) are in tests/fuzz/seeds/TARGET; the
# growing corpus and any crash/timeout/oom input go under $FUZZ_DIR (default target/fuzz).
# Every run uses: no panic (the panic hook aborts), -timeout=1 (no input may take over 1 s),
# -rss_limit_mb=1024 and -malloc_limit_mb=512 (memory bounded), inputs up to 1 MB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$root/target/fuzz}"
out="${FUZZ_DIR:-$root/target/fuzz}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"

targets() { sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$here/Cargo.toml" | grep -v '^aigentable'; }

build() {
  # --target keeps these flags off build scripts and proc macros (host code).
  RUSTFLAGS="-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --locked --manifest-path "$here/Cargo.toml" --target "$triple" --bins
}

# run TARGET [flags...]: fuzz with the standard limits; extra flags are passed to libFuzzer.
run() {
  local t="$1"; shift
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
  "$bin_dir/$t" -timeout=1 -rss_limit_mb=1024 -malloc_limit_mb=512 -max_len=1048576 \
    -artifact_prefix="$out/artifacts/$t/" -print_final_stats=1 "$@" \
    "$out/corpus/$t" "$here/seeds/$t"
}

case "${1:-}" in
  build) build ;;
  list) targets ;;
  run) shift; run "$@" ;;
  all)
    secs="${2:?seconds per target}"; jobs="${3:-2}"
    mkdir -p "$out/logs"
    failed=0
    # JOBS targets at a time; each one's log is kept and its last lines shown.
    for t in $(targets); do
      while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
      ( if run "$t" -max_total_time="$secs" >"$out/logs/$t.log" 2>&1; then
          echo "== fuzz $t: ok ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/logs/$t.log" | grep -o '[0-9]*$') execs in ${secs}s)"
        else
          echo "== fuzz $t: FAILED (log: $out/logs/$t.log)"; tail -40 "$out/logs/$t.log"
          touch "$out/logs/$t.failed"
        fi ) &
    done
    wait
    for t in $(targets); do
      if [ -e "$out/logs/$t.failed" ]; then rm -f "$out/logs/$t.failed"; failed=1; fi
    done
    exit "$failed"
    ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
