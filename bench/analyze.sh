#!/usr/bin/env bash
# bench/analyze.sh — cvdmirror analyze vs goaccess (Debian), same log, same run.
#
# Usage: bench/analyze.sh          (~5 minutes with the default 2 million
#                                   requests, most of it goaccess, plus builds)
#
# The log: about BENCH_REQUESTS requests of a lagging-mirror incident over
# two days (freshclam clients checking every 30-90 minutes, daily-27654.cdiff
# missing from 16:41 to 18:17 on the first day, a herd of whole downloads
# sharing a 100 Mbit/s link, some web traffic), written by
# cvdmirror-analyzegen (bench/loadgen, cvdmirror::analyze::generate) in
# nginx's `combined` format (BENCH_DIALECT), cached by its parameters.
# Both tools read that file from the page cache (one untimed read first):
#   cvdmirror   cvdmirror analyze --no-html LOG       (summary to a file)
#   goaccess    goaccess LOG --log-format=COMBINED -o report.html
#               (its default report; it has no summary-only mode)
#   baseline    BASELINE_BIN=PATH: an older cvdmirror, run like the first
# Each: wall time, peak RSS, user+system CPU (GNU time), BENCH_REPS runs
# (GOACCESS_REPS for goaccess: it takes minutes), medians; ratios
# goaccess / cvdmirror. The report also quotes what cvdmirror concluded
# and the generator's ground truth, so a fast wrong answer shows.
#
# Knobs (environment): BENCH_REQUESTS (2000000), BENCH_DIALECT (nginx; any
# of cvdmirror-analyzegen's), BENCH_SEED (1), BENCH_REPS (3), GOACCESS_REPS
# (1), BENCH_LOG_CACHE (/tmp/cvdmirror-analyzebench), CVDMIRROR_BIN and
# ANALYZEGEN_BIN (skip the builds), BASELINE_BIN, BENCH_OUT (also write the
# report there), BENCH_KEEP_TMP=1.
#
# Needs root on Debian only to install goaccess if it is missing. No
# network beyond apt; every loop is bounded; cleans up on exit or Ctrl-C.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUESTS=${BENCH_REQUESTS:-2000000}
DIALECT=${BENCH_DIALECT:-nginx}
SEED=${BENCH_SEED:-1}
REPS=${BENCH_REPS:-3}
GREPS=${GOACCESS_REPS:-1}
CACHE=${BENCH_LOG_CACHE:-/tmp/cvdmirror-analyzebench}

BENCH_NAME=analyze-bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in -h | --help) sed -n '2,31p' "$0"; exit 0 ;; "") ;; *) die "no arguments (see --help)" ;; esac
[[ $REQUESTS =~ ^[0-9]+$ && $REQUESTS -ge 1000 && $REQUESTS -le 50000000 ]] || die "BENCH_REQUESTS must be 1000..50000000"
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 && $REPS -le 9 ]] || die "BENCH_REPS must be 1..9"
[[ $GREPS =~ ^[0-9]+$ && $GREPS -ge 1 && $GREPS -le 9 ]] || die "GOACCESS_REPS must be 1..9"
[[ $SEED =~ ^[0-9]+$ ]] || die "BENCH_SEED must be a number"
[[ $DIALECT =~ ^[A-Za-z-]+$ ]] || die "BENCH_DIALECT: a dialect name"

need goaccess goaccess
[[ -x /usr/bin/time ]] || need /usr/bin/time time
command -v cargo >/dev/null 2>&1 || die "cargo is required"
bench_tmp cvdanalyzebench

# ---------------------------------------------------------------- build
cd "$REPO"
COMMIT=$(bench_commit "$REPO")
if [[ -n ${CVDMIRROR_BIN:-} ]]; then
  CVD_BIN=$CVDMIRROR_BIN
  COMMIT="binary $CVDMIRROR_BIN (checkout at $COMMIT)"
else
  log "building cvdmirror (release; minutes on a busy machine)"
  nice -n 10 cargo build --release --quiet --bin cvdmirror
  CVD_BIN=$REPO/target/release/cvdmirror
fi
if [[ -n ${ANALYZEGEN_BIN:-} ]]; then
  GEN=$ANALYZEGEN_BIN
else
  log "building cvdmirror-analyzegen (bench/loadgen, release)"
  nice -n 10 cargo build --release --quiet -p cvdmirror-loadgen --bin cvdmirror-analyzegen
  GEN=$REPO/target/release/cvdmirror-analyzegen
fi
# Measure copies: other builds in a shared target dir may replace the originals.
mkdir -p "$TMP/bin"
{ cp "$CVD_BIN" "$TMP/bin/cvdmirror" && cp "$GEN" "$TMP/bin/analyzegen"; } || die "cannot copy the binaries"
CVD_BIN=$TMP/bin/cvdmirror GEN=$TMP/bin/analyzegen
if [[ -n ${BASELINE_BIN:-} ]]; then
  cp "$BASELINE_BIN" "$TMP/bin/cvdmirror-base" || die "cannot copy $BASELINE_BIN"
  BASE_BIN=$TMP/bin/cvdmirror-base
fi
"$CVD_BIN" analyze --help | grep -q -- '--link-capacity' || die "$CVD_BIN has no 'analyze --link-capacity'"
GOACCESS_VERSION=$(goaccess --version 2>/dev/null | head -1 || true)
GOACCESS_PKG=$(dpkg-query -W -f '${Version}' goaccess 2>/dev/null || echo unknown)

# ---------------------------------------------------------------- the log
mkdir -p "$CACHE"
LOG=$CACHE/access-$DIALECT-r$REQUESTS-s$SEED.log
TRUTH=$LOG.truth
if [[ -f $LOG.complete && -s $LOG ]]; then
  log "log: cached $LOG"
else
  log "log: generating ~$REQUESTS requests ($DIALECT) into $LOG"
  rm -f "$LOG" "$LOG.complete"
  timeout 1200 "$GEN" --requests "$REQUESTS" --dialect "$DIALECT" --seed "$SEED" --out "$LOG" 2>"$TRUTH" ||
    die "generation failed: $(cat "$TRUTH")"
  touch "$LOG.complete"
fi
LINES=$(wc -l <"$LOG")
SIZE=$(stat -c %s "$LOG")
cat "$LOG" >/dev/null # into the page cache, untimed

# ---------------------------------------------------------------- runs
# run NAME CMD...: one timed run into $TMP/NAME.N; appends "wall rss_kb cpu" to $TMP/NAME.times
run() {
  local name=$1 n w rc=0
  shift
  n=$(($(wc -l 2>/dev/null <"$TMP/$name.times" || echo 0) + 1))
  w=$TMP/$name.$n
  mkdir -p "$w"
  (cd "$w" && timeout 3600 /usr/bin/time -f '%e %M %U %S' -o "$w/time" "$@" >"$w/out.txt" 2>"$w/err.txt") || rc=$?
  [[ $rc == 0 ]] || die "$name run $n failed ($rc): $(tail -3 "$w/err.txt")"
  awk '{ printf "%s %s %.2f\n", $1, $2, $3 + $4 }' "$w/time" >>"$TMP/$name.times"
  log "$name run $n: $(tail -1 "$TMP/$name.times") (wall s, max RSS kB, CPU s)"
}
median() { # median NAME COLUMN
  sort -n -k"$2" "$TMP/$1.times" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((i = 1; i <= REPS; i++)); do
  run cvdmirror "$CVD_BIN" analyze --no-html "$LOG"
  [[ -z ${BASE_BIN:-} ]] || run baseline "$BASE_BIN" analyze --no-html "$LOG"
done
for ((i = 1; i <= GREPS; i++)); do
  run goaccess goaccess "$LOG" --log-format=COMBINED --no-global-config -o "report.html"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
row() { # row NAME LABEL RUNS
  printf '| %s | %s | %s | %s | %s |\n' "$2" "$3" "$(median "$1" 1)" \
    "$(awk -v k="$(median "$1" 2)" 'BEGIN { printf "%.1f", k / 1024 }')" "$(median "$1" 3)"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }
CW=$(median cvdmirror 1) CM=$(median cvdmirror 2) CC=$(median cvdmirror 3)
GW=$(median goaccess 1) GM=$(median goaccess 2) GC=$(median goaccess 3)
SUMMARY=$TMP/cvdmirror.1/out.txt
REPORT=$TMP/report.md
{
  echo "### Run — $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "- command: \`bench/analyze.sh\` (BENCH_REQUESTS=$REQUESTS BENCH_DIALECT=$DIALECT BENCH_SEED=$SEED BENCH_REPS=$REPS GOACCESS_REPS=$GREPS)"
  echo "- commit: $COMMIT; machine: $(nproc)-core VM, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo) RAM; load average before $LOAD_BEFORE, after $LOAD_AFTER"
  echo "- log: $LINES lines, $((SIZE / 1000000)) MB, $DIALECT combined, generated by cvdmirror-analyzegen (seed $SEED), read from the page cache"
  echo "- goaccess: $GOACCESS_VERSION (Debian package $GOACCESS_PKG), \`--log-format=COMBINED --no-global-config -o report.html\`"
  echo
  echo "| tool | runs | wall s (median) | max RSS MB | CPU s |"
  echo "|---|---|---|---|---|"
  row cvdmirror "cvdmirror analyze --no-html" "$REPS"
  [[ -z ${BASE_BIN:-} ]] || row baseline "cvdmirror analyze (baseline $BASELINE_BIN)" "$REPS"
  row goaccess "goaccess" "$GREPS"
  echo
  echo "Ratios goaccess / cvdmirror: wall $(ratio "$GW" "$CW")×, memory $(ratio "$GM" "$CM")×, CPU $(ratio "$GC" "$CC")×."
  if [[ -n ${BASE_BIN:-} ]]; then
    echo "cvdmirror / baseline: wall $(awk -v a="$CW" -v b="$(median baseline 1)" 'BEGIN { printf "%.2f", a / b }')×, memory $(awk -v a="$CM" -v b="$(median baseline 2)" 'BEGIN { printf "%.2f", a / b }')×."
  fi
  echo
  echo "Ground truth (generator): \`$(cat "$TRUTH")\`"
  echo
  echo "What cvdmirror concluded (summary, first lines of the cause):"
  echo
  echo '```'
  sed -n '/^Cause$/,/^$/p' "$SUMMARY" | head -6
  grep -m1 -A1 '^Fallback chains' "$SUMMARY" || true
  grep -m1 -A1 '^  Peak' "$SUMMARY" || true
  echo '```'
} >"$REPORT"
cat "$REPORT"
[[ -z ${BENCH_OUT:-} ]] || cp "$REPORT" "$BENCH_OUT"
