#!/usr/bin/env bash
# Runs the reliability and fault tests N times in a row and prints a pass/fail table per test,
# so a test that fails once in N runs shows up (it is a bug to find, not something to retry).
#
#   scripts/soak.sh N [FILTER]
#
# The set: every test of the reliability_* test binaries, and every test elsewhere whose name
# mentions "fault". FILTER (optional) narrows it to tests whose name or test binary contains FILTER. The output
# of each run is kept under target/soak/ (run-K.txt), so a failure can be read afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/soak.sh N [FILTER]"
n=${1:?$usage}
filter=${2:-}
case "$n" in
  '' | *[!0-9]* | 0) echo "$usage (N is a positive number of runs)" >&2; exit 2 ;;
esac
case "$filter" in
  *[!A-Za-z0-9_]*) echo "$usage (FILTER is letters, digits and _ only)" >&2; exit 2 ;;
esac
scripts/setup.sh
cargo build --workspace --tests
out=target/soak
rm -rf "$out"
mkdir -p "$out"
expr='binary(~reliability_) | test(~fault)'
if [ -n "$filter" ]; then
  # nextest refuses a binary() that matches no test binary, so name the binaries only when a
  # test file under tests/ carries FILTER in its name.
  if compgen -G "tests/*${filter}*.rs" >/dev/null; then
    expr="($expr) & (test(~$filter) | binary(~$filter))"
  else
    expr="($expr) & test(~$filter)"
  fi
fi
started=$(date +%s)
for i in $(seq 1 "$n"); do
  # A failing run is recorded, not fatal: the table counts it.
  cargo nextest run --workspace --no-fail-fast --status-level all --final-status-level none \
    -E "$expr" >"$out/run-$i.txt" 2>&1 || true
  # Lines like "        PASS [   2.119s] (1/5) sandbox-harness::reliability_faults name".
  awk -v run="$i" '
    $1 ~ /^(PASS|FAIL|TIMEOUT|SIGSEGV|SIGABRT|SIGKILL|LEAK|FLAKY)$/ && $0 ~ /\] \(/ {
      status = $1; name = $NF; bin = $(NF-1); sub(/^.*::/, "", bin)
      print run "\t" bin "::" name "\t" status
    }' "$out/run-$i.txt" >>"$out/results.tsv"
  printf 'soak: run %d of %d done (%d s so far)\n' "$i" "$n" "$(( $(date +%s) - started ))" >&2
done
if [ ! -s "$out/results.tsv" ]; then
  echo "soak: no test ran; see $out/run-1.txt" >&2
  exit 1
fi
awk -F'\t' -v n="$n" '
  { seen[$2] = 1; if ($3 == "PASS") pass[$2]++; else { fail[$2]++; runs[$2] = runs[$2] " " $1 } }
  END {
    printf "%-72s %7s %5s  %s\n", "test", "pass", "fail", "failed runs"
    bad = 0
    for (t in seen) {
      p = pass[t] + 0; f = fail[t] + 0
      printf "%-72s %3d/%-3d %5d %s\n", t, p, n, f, runs[t] | "sort"
      if (p != n) bad++
    }
    close("sort")
    printf "\n%d test(s), %d with a failure or a missing run in %d run(s); logs in target/soak/\n", length(seen), bad, n
    exit bad > 0
  }' "$out/results.tsv"
