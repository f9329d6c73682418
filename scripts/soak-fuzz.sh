#!/usr/bin/env bash
# Long fuzz runs of every cargo-fuzz target (fuzz/): each runs FUZZ_SECONDS (default 600) with
# a memory cap, starting from the corpus kept in the repo. Exits non-zero when any target finds
# a crash, a timeout or an out-of-memory input (saved under fuzz/artifacts/TARGET/); fix it and
# add the input as a regression test (see fuzz/README.md). Installs the nightly toolchain and
# cargo-fuzz when missing.
#
#   FUZZ_SECONDS=600            seconds per target
#   FUZZ_TARGETS="policy_load iptables_save port_list packet"
#   FUZZ_RSS_MB=2048            libFuzzer -rss_limit_mb (an input needing more is a failure)
#   FUZZ_JOBS=1                 parallel fuzzing processes per target (libFuzzer -fork)
#   FUZZ_MERGE=0                1: merge the inputs that found new coverage into fuzz/corpus
#   FUZZ_TARGET_DIR=fuzz/target cargo target directory of the instrumented build
#
# New inputs are written to a scratch corpus, so the repo's corpus only changes with
# FUZZ_MERGE=1 (then review and commit it; keep it small).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-600}"
targets="${FUZZ_TARGETS:-policy_load iptables_save port_list packet}"
rss="${FUZZ_RSS_MB:-2048}"
jobs="${FUZZ_JOBS:-1}"
merge="${FUZZ_MERGE:-0}"
target_dir="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# Longest input per target: policy files and dumps get room for hostile sizes; the rest are short.
max_len() {
  case "$1" in
    policy_load | iptables_save) echo 65536 ;;
    *) echo 4096 ;;
  esac
}

fuzz() { (cd fuzz && cargo +nightly fuzz "$@"); }

fuzz build --sanitizer none --target-dir "$target_dir"
bin_dir="$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
summary=()
for t in $targets; do
  mkdir -p "$scratch/$t"
  log="$scratch/$t.log"
  echo "== $t: ${seconds}s, rss limit ${rss} MB, corpus fuzz/corpus/$t ($(ls fuzz/corpus/"$t" | wc -l) files)"
  extra=()
  [ "$jobs" -gt 1 ] && extra=(-fork="$jobs" -ignore_crashes=0)
  set +e
  fuzz run --sanitizer none --target-dir "$target_dir" "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss" -malloc_limit_mb="$rss" -timeout=10 \
    -max_len="$(max_len "$t")" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1
  rc=$?
  set -e
  done_line="$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  peak="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")"
  corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$done_line")"
  new="$(ls "$scratch/$t" | wc -l)"
  summary+=("$(printf '%-14s %6ss  execs %-10s cov %-6s ft %-7s corpus %-10s new %-5s peak %s MB  rc %s' \
    "$t" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$new" "${peak:-?}" "$rc")")
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written|artifact' "$log" | head -20 >&2 || true
  fi
  if [ "$merge" = 1 ] && [ "$new" -gt 0 ]; then
    # Only the inputs that add coverage to the repo's corpus are copied into it.
    "$bin_dir/$t" -merge=1 -rss_limit_mb="$rss" -max_len="$(max_len "$t")" \
      "fuzz/corpus/$t" "$scratch/$t" >"$log.merge" 2>&1 || true
  fi
done

echo
echo "fuzz soak summary (execs = total executions; cov/ft = libFuzzer coverage edges/features;"
echo "corpus = units/bytes at the end; new = inputs found beyond the repo corpus):"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
