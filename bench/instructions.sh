#!/usr/bin/env bash
# bench/instructions.sh — user-space instructions per request, cvdmirror vs
# nginx, counted by valgrind's callgrind: a measure the machine's load and
# the host's CPU steal do not move, for the request-rate scenarios of
# bench/serve.sh, whose req/s ratios they move most.
#
# Usage: bench/instructions.sh [check] [ims]    (default: both)
#   check  freshclam's header check: `Range: bytes=0-511`, `Connection:
#          close`, a new connection per request (`206`)
#   ims    the same with `If-Modified-Since` the file's time, keep-alive
#          (`304`)
#
# Each server runs alone under callgrind with one worker (nginx: one worker
# process; cvdmirror: `workers = 1`), serving bytecode.cvd with an access log
# to a file, as in bench/serve.sh. For each scenario, after a warm-up, the
# counters are zeroed, wrk sends the scenario's requests for INSTR_DURATION
# seconds, the counters are dumped, and the instructions of the serving
# processes (nginx's worker, cvdmirror's one process) are divided by the
# requests answered. Kernel work (system calls, TCP) is not counted:
# bench/serve.sh measures the whole.
#
# Knobs (environment): INSTR_DURATION (s, 8), CVDMIRROR_BIN (skip the build),
# BENCH_OUT (also write the report here), BENCH_KEEP_TMP=1.
#
# Talks only to loopback; every wait is bounded; cleans up on exit or Ctrl-C.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURE=${BENCH_FIXTURE:-$REPO/../shared/fixtures/clamav/bytecode-339.cvd}
DURATION=${INSTR_DURATION:-8}
BENCH_NAME=instructions
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,27p' "$0"; exit 0; }
SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=(check ims)
for s in "${SCENARIOS[@]}"; do
  case $s in check | ims) ;; *) die "unknown scenario '$s' (check|ims)" ;; esac
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 2 && $DURATION -le 120 ]] || die "INSTR_DURATION must be 2..120"

need valgrind valgrind
need_serving_peers

bench_tmp cvdinstr
cd "$REPO"
COMMIT=$(bench_commit "$REPO")
if [[ -n ${CVDMIRROR_BIN:-} ]]; then
  CVD_BIN=$CVDMIRROR_BIN
else
  log "building cvdmirror (release)"
  cargo build --release --quiet --bin cvdmirror
  CVD_BIN=$REPO/target/release/cvdmirror
fi

ROOT=$TMP/root
mkdir -p "$ROOT"
chmod 755 "$TMP" "$ROOT"
cp "$FIXTURE" "$ROOT/bytecode.cvd"
chmod 644 "$ROOT/bytecode.cvd"
IMS_DATE=$(date_like_cvdmirror "$ROOT/bytecode.cvd")
write_check_lua "$TMP/check.lua"
write_wrk_get "$TMP/ims.lua" 'Range: bytes=0-511' "If-Modified-Since: $IMS_DATE"

# nginx as bench/serve.sh runs it, with one worker, which stays root:
# callgrind_control cannot reach a process that changed user.
NGINX_PORT=$(free_port 18680)
write_mirror_nginx_conf "$TMP/nginx" "$NGINX_PORT" "$ROOT" root 1 file 0 4096
cat >"$TMP/cvdmirror.toml" <<EOF
workers = 1
EOF

# status_of PORT SCENARIO: the status and body size the scenario's request gets.
status_of() {
  local -a headers=(-H 'Range: bytes=0-511')
  [[ $2 == ims ]] && headers+=(-H "If-Modified-Since: $IMS_DATE")
  curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "${headers[@]}" \
    "http://127.0.0.1:$1/bytecode.cvd"
}

# measure NAME PORT COMMAND... : for each scenario, sets REQUESTS[NAME.scenario]
# and INSTRUCTIONS[NAME.scenario] (run in this shell, not a subshell, so that
# `die` and the cleanup reach the server).
declare -A REQUESTS INSTRUCTIONS
measure() {
  local name=$1 port=$2
  shift 2
  local out=$TMP/cg.$name
  mkdir -p "$out"
  valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out/%p" \
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  local pid=$!
  STARTED_PIDS+=("$pid")
  local ready=0
  for _ in $(seq 600); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/bytecode.cvd"; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ $ready == 1 ]] || { tail -5 "$TMP/$name.err" >&2; die "$name did not start under valgrind"; }
  local scenario code want
  for scenario in "${SCENARIOS[@]}"; do
    code=$(status_of "$port" "$scenario")
    [[ $scenario == check ]] && want="206 512" || want="304 0"
    [[ $code == "$want" ]] || die "$name: the $scenario request answered '$code', expected '$want'"
  done
  # The processes that serve: nginx's workers, or cvdmirror itself. (A
  # master asleep in sigsuspend would never answer callgrind_control.)
  local serving p dump=0 result requests total f ir
  serving=$(pgrep -P "$pid" || echo "$pid")
  for scenario in "${SCENARIOS[@]}"; do
    wrk -t1 -c4 -d2s -s "$TMP/$scenario.lua" "http://127.0.0.1:$port/bytecode.cvd" >/dev/null
    for p in $serving; do timeout 60 callgrind_control -z "$p" >/dev/null || die "$name: cannot zero the counters of $p"; done
    result=$(wrk -t1 -c4 -d"${DURATION}s" -s "$TMP/$scenario.lua" "http://127.0.0.1:$port/bytecode.cvd")
    for p in $serving; do timeout 60 callgrind_control -d "$p" >/dev/null || die "$name: cannot dump the counters of $p"; done
    dump=$((dump + 1))
    requests=$(awk '/requests in/ {print $1}' <<<"$result")
    # This scenario's counts: each serving process's dump-th dump.
    total=0
    for f in "$out"/*."$dump"; do
      [[ -e $f ]] || continue
      ir=$(awk '/^summary:/ {print $2}' "$f")
      total=$((total + ${ir:-0}))
    done
    [[ $requests =~ ^[0-9]+$ && $requests -gt 0 && $total -gt 0 ]] || die "$name $scenario: no requests or no counts (requests=$requests)"
    REQUESTS[$name.$scenario]=$requests
    INSTRUCTIONS[$name.$scenario]=$total
  done
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

log "nginx under callgrind (${DURATION}s of each of: ${SCENARIOS[*]})"
measure nginx "$NGINX_PORT" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log"
CVD_PORT=$(free_port $((NGINX_PORT + 1)))
log "cvdmirror under callgrind (${DURATION}s of each of: ${SCENARIOS[*]})"
measure cvdmirror "$CVD_PORT" "$CVD_BIN" serve --config "$TMP/cvdmirror.toml" \
  --listen "127.0.0.1:$CVD_PORT" --root "$ROOT" --access-log "$TMP/cvdmirror-access.log"

ROWS=""
for scenario in "${SCENARIOS[@]}"; do
  case $scenario in
    check) label='check: `Range: bytes=0-511`, `Connection: close` (`206`, new connection per request)' ;;
    ims) label='ims: `If-Modified-Since` + `Range`, keep-alive (`304`)' ;;
  esac
  ng_per=$((INSTRUCTIONS[nginx.$scenario] / REQUESTS[nginx.$scenario]))
  cvd_per=$((INSTRUCTIONS[cvdmirror.$scenario] / REQUESTS[cvdmirror.$scenario]))
  ratio=$(awk -v a="$cvd_per" -v b="$ng_per" 'BEGIN { printf "%.2f", a / b }')
  ROWS+="| $label | ${REQUESTS[nginx.$scenario]} | $ng_per | ${REQUESTS[cvdmirror.$scenario]} | $cvd_per | $ratio |"$'\n'
done
REPORT=$(
  cat <<EOF
## Instructions per request — $(date -u '+%Y-%m-%d %H:%M') UTC

Command: \`bench/instructions.sh ${SCENARIOS[*]}\` (INSTR_DURATION=$DURATION; one worker each, under $(valgrind --version), wrk -t1 -c4, access log to a file). User-space instructions per request answered; kernel work is not counted. Lower is better.

Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r); $(nginx -v 2>&1 | sed 's/nginx version: //'); cvdmirror $COMMIT ($(rustc --version 2>/dev/null | awk '{print $1, $2}')).

| scenario | nginx requests | nginx per request | cvdmirror requests | cvdmirror per request | cvdmirror / nginx |
|---|---:|---:|---:|---:|---:|
${ROWS%$'\n'}
EOF
)
echo "$REPORT"
[[ -n ${BENCH_OUT:-} ]] && echo "$REPORT" >"$BENCH_OUT"
exit 0
