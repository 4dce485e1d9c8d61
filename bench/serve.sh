#!/usr/bin/env bash
# bench/serve.sh — cvdmirror vs nginx serving benchmarks, side by side in one run.
#
# Usage: bench/serve.sh [check|ims|bulk|memory|tls-check|tls-bulk]...
#        (no argument: all six)
#
# Scenarios (each run against both servers with identical load):
#   check   freshclam's header check: GET /bytecode.cvd, Range: bytes=0-511,
#           Connection: close (one new TCP connection per request) -> 206, req/s
#   ims     GET /bytecode.cvd with If-Modified-Since = its Last-Modified and
#           Range: bytes=0-511, keep-alive -> 304, req/s
#   bulk    8 concurrent downloads of the 60 MiB daily.cvd, repeated -> MiB/s
#   memory  10,000 connections each reading daily.cvd a few KB/s -> server
#           RSS growth per connection (kB, lower is better)
#   tls-check  check over HTTPS: a new TCP connection and a full TLS
#           handshake per request (as freshclam makes them) -> req/s
#   tls-bulk   bulk over HTTPS (no sendfile: read, encrypt, write) -> MiB/s
#   Both servers serve HTTPS with the same ECDSA P-256 certificate (made
#   with openssl here); the report adds each server's CPU time per request
#   and per GiB, plain next to TLS.
#
# Knobs (environment): BENCH_DURATION (s per run, 6), BENCH_REPS (5),
# BENCH_CONNS (wrk connections for check/ims, 64), BENCH_SLOW_CONNS (10000),
# BENCH_ACCESS_LOG (file|off, file), BENCH_NGINX_OFC (1 adds an nginx row with
# open_file_cache on), CVDMIRROR_BIN (skip the build and use this binary),
# BENCH_OUT (also write the Markdown report to this file), BENCH_KEEP_TMP=1,
# BENCH_WAIT_QUIET (before each run wait up to this many seconds, 10, for the
# machine's CPU to be < 15% busy: a shared machine skews numbers).
#
# Talks only to loopback; every loop is bounded; cleans up on exit or Ctrl-C.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURE=${BENCH_FIXTURE:-$REPO/../shared/fixtures/clamav/bytecode-339.cvd}
DURATION=${BENCH_DURATION:-6}
REPS=${BENCH_REPS:-5}
CONNS=${BENCH_CONNS:-64}
SLOW_CONNS=${BENCH_SLOW_CONNS:-10000}
ACCESS_LOG=${BENCH_ACCESS_LOG:-file}
NGINX_OFC=${BENCH_NGINX_OFC:-0}
BIG_BYTES=$((60 * 1024 * 1024))
# Several loopback source addresses, so 10k connections never run short of ports.
SOURCES=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4

BENCH_NAME=bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_SCENARIOS=(check ims bulk memory tls-check tls-bulk)
SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=("${ALL_SCENARIOS[@]}")
for s in "${SCENARIOS[@]}"; do
  case $s in check | ims | bulk | memory | tls-check | tls-bulk) ;; -h | --help) sed -n '2,30p' "$0"; exit 0 ;; *) die "unknown scenario '$s' (check|ims|bulk|memory|tls-check|tls-bulk)" ;; esac
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 120 ]] || die "BENCH_DURATION must be 1..120"
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 && $REPS -le 9 ]] || die "BENCH_REPS must be 1..9"
[[ $SLOW_CONNS =~ ^[0-9]+$ && $SLOW_CONNS -ge 1 && $SLOW_CONNS -le 30000 ]] || die "BENCH_SLOW_CONNS must be 1..30000"
[[ $ACCESS_LOG == file || $ACCESS_LOG == off ]] || die "BENCH_ACCESS_LOG must be file or off"

# ---------------------------------------------------------------- tools
need_serving_peers
# 65536 open files for servers and load generator; a container without
# CAP_SYS_RESOURCE caps this at its hard limit (20000 here), which is recorded.
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited || $NOFILE -gt 65536 ]] && NOFILE=65536
ulimit -n "$NOFILE" || die "cannot raise the open-file limit to $NOFILE"
[[ $NOFILE -ge $((2 * SLOW_CONNS + 200)) ]] ||
  log "note: open-file limit $NOFILE < 2 x BENCH_SLOW_CONNS: a server holding one socket and one file per download may run out"

# ---------------------------------------------------------------- cleanup
bench_tmp cvdbench

# ---------------------------------------------------------------- build
cd "$REPO"
COMMIT=$(bench_commit "$REPO")
CVD_PENDING=0
if [[ -n ${CVDMIRROR_BIN:-} ]]; then
  CVD_BIN=$CVDMIRROR_BIN
else
  log "building cvdmirror (release)"
  if cargo build --release --quiet --bin cvdmirror; then CVD_BIN=$REPO/target/release/cvdmirror; else CVD_BIN=; fi
fi
if [[ -z $CVD_BIN ]] || ! "$CVD_BIN" serve --help 2>&1 | grep -q -- '--listen'; then
  log "cvdmirror has no working 'serve' command yet: its column will read 'pending'"
  CVD_PENDING=1
fi
CVD_MAXCONNS=()
if [[ $CVD_PENDING == 0 ]] && "$CVD_BIN" serve --help 2>&1 | grep -q -- '--max-conns'; then
  CVD_MAXCONNS=(--max-conns 20000)
fi
CVD_TLS_OK=0
if [[ $CVD_PENDING == 0 ]] && "$CVD_BIN" serve --help 2>&1 | grep -q -- '--tls-listen'; then
  CVD_TLS_OK=1
fi
log "building cvdmirror-loadgen (release)"
cargo build --release --quiet -p cvdmirror-loadgen
LOADGEN=$REPO/target/release/cvdmirror-loadgen

# ---------------------------------------------------------------- data
ROOT=$TMP/root
mkdir -p "$ROOT"
chmod 755 "$TMP" "$ROOT"
cp "$FIXTURE" "$ROOT/bytecode.cvd"
IMS_DATE=$(date_like_cvdmirror "$ROOT/bytecode.cvd")
# A daily.cvd-sized file: a well-formed CVD header (MD5 of the body, unsigned)
# in front of random bytes, so a server that reads CVD headers accepts it.
DAILY_STIME=$(($(date +%s) - 3600))
head -c $((BIG_BYTES - 512)) /dev/urandom >"$TMP/body"
BODY_MD5=$(md5sum "$TMP/body" | cut -d' ' -f1)
{
  printf '%-512s' "ClamAV-VDB:$(LC_ALL=C date -u -d "@$DAILY_STIME" '+%d %b %Y %H-%M +0000'):27830:2071234:90:$BODY_MD5:unsigned-benchmark-file:cvdbench:$DAILY_STIME"
  cat "$TMP/body"
} >"$ROOT/daily.cvd"
rm -f "$TMP/body"
touch -d "@$DAILY_STIME" "$ROOT/daily.cvd"
chmod 644 "$ROOT"/*

# The certificate both servers present over HTTPS: ECDSA P-256, as a
# modern CA issues (the handshake signature is the server's main cost per
# new TLS connection). wrk does not verify it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$TMP/tls-key.pem" -out "$TMP/tls-cert.pem" -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null || die "openssl cannot make the benchmark certificate"

# ---------------------------------------------------------------- servers
NGINX_PORT=$(free_port 18480)
NGINX_OFC_PORT=$(free_port $((NGINX_PORT + 1)))
CVD_PORT=$(free_port $((NGINX_OFC_PORT + 1)))
NGINX_TLS_PORT=$(free_port $((CVD_PORT + 1)))
NGINX_OFC_TLS_PORT=$(free_port $((NGINX_TLS_PORT + 1)))
CVD_TLS_PORT=$(free_port $((NGINX_OFC_TLS_PORT + 1)))

# Two nginx workers = the two tokio workers cvdmirror runs.
write_serve_nginx_conf() { # write_serve_nginx_conf NAME PORT OFC(0|1) TLS_PORT
  write_mirror_nginx_conf "$TMP/$1" "$2" "$ROOT" www-data 2 "$ACCESS_LOG" "$3" "$NOFILE"
  # The same mirror over HTTPS on TLS_PORT: a second server block before
  # the closing brace of http {}. nginx's defaults otherwise (it cannot
  # sendfile under TLS without kernel TLS, which this kernel lacks).
  local conf=$TMP/$1/nginx.conf
  sed -i '$d' "$conf"
  cat >>"$conf" <<NGINX
  server {
    listen 127.0.0.1:$4 ssl backlog=4096;
    ssl_certificate $TMP/tls-cert.pem;
    ssl_certificate_key $TMP/tls-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $ROOT;
    location / { }
  }
}
NGINX
  nginx -t -q -p "$TMP/$1" -c "$conf" -e "$TMP/$1/logs/error.log" || die "nginx config $conf is invalid"
}

wait_http() { # wait_http PORT PID
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$1/bytecode.cvd" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

declare -A PORT TLS_PORT PID
start_server() { # start_server NAME
  local name=$1 p
  case $name in
    cvdmirror)
      local lg=off
      [[ $ACCESS_LOG == file ]] && lg=$TMP/cvdmirror-access.log
      local tls=()
      [[ $CVD_TLS_OK == 1 ]] && tls=(--tls-listen "127.0.0.1:$CVD_TLS_PORT" --tls-cert "$TMP/tls-cert.pem" --tls-key "$TMP/tls-key.pem")
      TOKIO_WORKER_THREADS=2 "$CVD_BIN" serve --listen "127.0.0.1:$CVD_PORT" --root "$ROOT" \
        --access-log "$lg" "${CVD_MAXCONNS[@]}" "${tls[@]}" >"$TMP/cvdmirror.out" 2>>"$TMP/cvdmirror.err" &
      p=$!
      STARTED_PIDS+=("$p")
      PORT[$name]=$CVD_PORT
      TLS_PORT[$name]=$CVD_TLS_PORT
      for _ in $(seq 150); do
        grep -q "listening on http://127.0.0.1:$CVD_PORT/" "$TMP/cvdmirror.out" 2>/dev/null && break
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
      done
      grep -q "listening on http://127.0.0.1:$CVD_PORT/" "$TMP/cvdmirror.out" 2>/dev/null ||
        { tail -5 "$TMP/cvdmirror.err" >&2 || true; die "cvdmirror did not print its listening line"; }
      ;;
    nginx | nginx-ofc)
      local pfx=$TMP/$name
      nginx -p "$pfx" -c "$pfx/nginx.conf" -e "$pfx/logs/error.log" &
      p=$!
      STARTED_PIDS+=("$p")
      if [[ $name == nginx ]]; then
        PORT[$name]=$NGINX_PORT TLS_PORT[$name]=$NGINX_TLS_PORT
      else
        PORT[$name]=$NGINX_OFC_PORT TLS_PORT[$name]=$NGINX_OFC_TLS_PORT
      fi
      ;;
  esac
  PID[$name]=$p
  wait_http "${PORT[$name]}" "$p" || die "$name did not answer on port ${PORT[$name]}"
}

stop_server() { # stop_server NAME
  local p=${PID[$1]:-}
  [[ -n $p ]] || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    log "warning: $1 (pid $p) still running 10 s after SIGTERM; killing it"
    echo "$1: did not stop within 10 s of SIGTERM" >>"$TMP/misbehaviour"
    kill -KILL "$p" 2>/dev/null || true
  fi
  wait "$p" 2>/dev/null || true
  PID[$1]=
}

server_pids() { # server_pids NAME -> comma list: the process and its children
  local p=${PID[$1]} kids
  kids=$(pgrep -P "$p" | paste -sd, -)
  echo "$p${kids:+,$kids}"
}

SERVERS=()
[[ $CVD_PENDING == 0 ]] && SERVERS+=(cvdmirror)
SERVERS+=(nginx)
[[ $NGINX_OFC == 1 ]] && SERVERS+=(nginx-ofc)
write_serve_nginx_conf nginx "$NGINX_PORT" 0 "$NGINX_TLS_PORT"
[[ $NGINX_OFC == 1 ]] && write_serve_nginx_conf nginx-ofc "$NGINX_OFC_PORT" 1 "$NGINX_OFC_TLS_PORT"

start_all() { for s in "${SERVERS[@]}"; do start_server "$s"; done; }
stop_all() { for s in "${SERVERS[@]}"; do stop_server "$s"; done; }

# Rotates the server order per repetition so neither always runs first.
order_for_rep() { # order_for_rep REP -> server names
  local n=${#SERVERS[@]} i
  for ((i = 0; i < n; i++)); do printf '%s ' "${SERVERS[$(((i + $1) % n))]}"; done
}

# ---------------------------------------------------------------- checks
status_of() { # status_of PORT CURL_ARGS... -> "code size"
  local port=$1
  shift
  curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "$@" "http://127.0.0.1:$port/bytecode.cvd"
}

preflight() {
  local s code want
  for s in "${SERVERS[@]}"; do
    code=$(status_of "${PORT[$s]}" -H 'Range: bytes=0-511' -H 'Connection: close')
    log "preflight $s: Range 0-511 -> $code (want 206 512)"
    [[ $code == "206 512" ]] || echo "$s: GET /bytecode.cvd Range: bytes=0-511 answered '$code', expected '206 512'" >>"$TMP/misbehaviour"
    code=$(status_of "${PORT[$s]}" -H "If-Modified-Since: $IMS_DATE" -H 'Range: bytes=0-511')
    log "preflight $s: If-Modified-Since $IMS_DATE -> $code (want 304 0)"
    [[ $code == "304 0" ]] || echo "$s: GET /bytecode.cvd If-Modified-Since: $IMS_DATE answered '$code', expected '304 0'" >>"$TMP/misbehaviour"
    want=$(curl -sS -I --max-time 5 "http://127.0.0.1:${PORT[$s]}/bytecode.cvd" | tr -d '\r' | awk -F': ' 'tolower($1)=="last-modified"{print $2}')
    log "preflight $s: Last-Modified: ${want:-<none>}"
    [[ $want == "$IMS_DATE" ]] || echo "$s: Last-Modified of bytecode.cvd is '${want:-<none>}', expected '$IMS_DATE' (header stime)" >>"$TMP/misbehaviour"
    code=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 "http://127.0.0.1:${PORT[$s]}/daily.cvd")
    log "preflight $s: GET /daily.cvd -> $code (want 200 $BIG_BYTES)"
    [[ $code == "200 $BIG_BYTES" ]] || echo "$s: GET /daily.cvd answered '$code', expected '200 $BIG_BYTES'" >>"$TMP/misbehaviour"
    [[ $TLS_RUN == 1 ]] || continue
    code=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 --cacert "$TMP/tls-cert.pem" \
      -H 'Range: bytes=0-511' -H 'Connection: close' "https://localhost:${TLS_PORT[$s]}/bytecode.cvd" 2>&1 || true)
    log "preflight $s: HTTPS Range 0-511 -> $code (want 206 512)"
    [[ $code == "206 512" ]] || echo "$s: HTTPS GET /bytecode.cvd Range: bytes=0-511 answered '$code', expected '206 512'" >>"$TMP/misbehaviour"
    code=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 -k "https://127.0.0.1:${TLS_PORT[$s]}/daily.cvd" 2>&1 || true)
    log "preflight $s: HTTPS GET /daily.cvd -> $code (want 200 $BIG_BYTES)"
    [[ $code == "200 $BIG_BYTES" ]] || echo "$s: HTTPS GET /daily.cvd answered '$code', expected '200 $BIG_BYTES'" >>"$TMP/misbehaviour"
    log "preflight $s: HTTPS with curl negotiates $(curl -sS -o /dev/null -k -v "https://127.0.0.1:${TLS_PORT[$s]}/bytecode.cvd" 2>&1 | sed -n 's/.*SSL connection using //p' | head -1)"
  done
}

# ---------------------------------------------------------------- wrk runs
RESULTS=$TMP/results.tsv
: >"$RESULTS"

write_lua() {
  write_check_lua "$TMP/check.lua"
  write_wrk_get "$TMP/ims.lua" 'Range: bytes=0-511' "If-Modified-Since: $IMS_DATE"
  write_wrk_get "$TMP/bulk.lua"
  cp "$TMP/check.lua" "$TMP/tls-check.lua"
  cp "$TMP/bulk.lua" "$TMP/tls-bulk.lua"
}

# Whether a scenario of this run speaks TLS (preflight checks HTTPS then).
TLS_RUN=0
for s in "${SCENARIOS[@]}"; do [[ $s == tls-* ]] && TLS_RUN=1; done
if [[ $TLS_RUN == 1 && $CVD_PENDING == 0 && $CVD_TLS_OK == 0 ]]; then
  die "this cvdmirror has no --tls-listen: run without the tls scenarios"
fi

base_url() { # base_url SCENARIO SERVER
  if [[ $1 == tls-* ]]; then echo "https://127.0.0.1:${TLS_PORT[$2]}"; else echo "http://127.0.0.1:${PORT[$2]}"; fi
}

# CPU (clock ticks) used by everyone, by the server's processes, by wrk: what
# is left over was other work on the machine, which skews a run.
cpu_total_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
cpu_of_pids() { # cpu_of_pids PID,PID.. -> utime+stime ticks
  local p t=0 f
  for p in ${1//,/ }; do
    f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + $(awk '{ print $12 + $13 }' <<<"$f")))
  done
  echo "$t"
}
# `times` output of a shell that ran wrk (its children's line) -> ticks.
times_to_ticks() { awk -v hz="$HZ" 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz }' "$1"; }
HZ=$(getconf CLK_TCK)
export TIMES_FILE=$TMP/wrk-times
NCPU=$(nproc)

wait_quiet() { # bounded: up to BENCH_WAIT_QUIET s for the CPU to be < 15% busy
  local limit=${BENCH_WAIT_QUIET:-10} waited=0 b0 t0 b1 t1
  while ((waited < limit)); do
    b0=$(cpu_total_busy) t0=$(awk '/^cpu / { s = 0; for (i = 2; i <= NF; i++) s += $i; print s; exit }' /proc/stat)
    sleep 1
    b1=$(cpu_total_busy) t1=$(awk '/^cpu / { s = 0; for (i = 2; i <= NF; i++) s += $i; print s; exit }' /proc/stat)
    (((b1 - b0) * 100 < 15 * (t1 - t0))) && return 0
    waited=$((waited + 1))
  done
  ((limit == 0)) || log "machine still busy after ${limit}s of waiting; running anyway"
}

active_opens() { awk '/^Tcp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp; }

to_bytes() { # "1.23GB" -> bytes (wrk uses 1024-based units)
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    m = 1; if (u == "KB") m = 1024; else if (u == "MB") m = 1048576; else if (u == "GB") m = 1073741824; else if (u == "TB") m = 1099511627776
    printf "%.0f", n * m }'
}

# run_wrk SCENARIO SERVER REP PATH CONNS
run_wrk() {
  local sc=$1 s=$2 rep=$3 path=$4 c=$5 out=$TMP/wrk-$1-$2-$3.txt o0 o1 reqs rps bytes secs bad errs value
  local pids b0 s0 others
  wait_quiet
  pids=$(server_pids "$s")
  b0=$(cpu_total_busy) s0=$(cpu_of_pids "$pids")
  o0=$(active_opens)
  # The inner shell reports wrk's CPU time (its children's line of `times`).
  bash -c 'timeout "$@"; rc=$?; times >"$TIMES_FILE"; exit $rc' _ $((DURATION + 30)) \
    wrk -t2 -c"$c" -d"${DURATION}s" --timeout 10s -s "$TMP/$sc.lua" \
    "$(base_url "$sc" "$s")$path" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed ($sc, $s)"; }
  o1=$(active_opens)
  # The server's own CPU time in the run: its cost per request and per byte.
  local server_cpu
  server_cpu=$(awk -v t="$(($(cpu_of_pids "$pids") - s0))" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
  # Share of the machine's CPU used by neither this server nor wrk (kernel
  # network work not charged to a process included: a few % even when idle).
  others=$(awk -v b="$(($(cpu_total_busy) - b0))" -v sv="$(($(cpu_of_pids "$pids") - s0))" \
    -v w="$(times_to_ticks "$TIMES_FILE")" -v hz="$HZ" -v n="$NCPU" -v d="$DURATION" \
    'BEGIN { o = (b - sv - w) / (hz * n * d) * 100; if (o < 0) o = 0; printf "%.0f", o }')
  reqs=$(awk '/requests in/ {print $1; exit}' "$out")
  secs=$(awk '/requests in/ {v = $4; sub(/s,?$/, "", v); print v; exit}' "$out")
  bytes=$(to_bytes "$(awk '/requests in/ {print $5; exit}' "$out")")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  bad=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
  errs=$(awk '/Socket errors:/ {sub(/.*Socket errors: /, ""); print}' "$out")
  if [[ $sc == bulk || $sc == tls-bulk ]]; then
    value=$(awk -v b="$bytes" -v t="$secs" 'BEGIN { printf "%.1f", b / t / 1048576 }')
  else
    value=$rps
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$s" "$rep" "$value" "$reqs" "$((o1 - o0))" "${bad:-0}" "$others" "$server_cpu" "$bytes" >>"$RESULTS"
  log "$sc $s rep $rep: $value $([[ $sc == *bulk ]] && echo MiB/s || echo req/s) ($reqs requests, $((o1 - o0)) new connections, server CPU ${server_cpu}s, others' CPU $others%${bad:+, $bad non-2xx/3xx}${errs:+, socket errors: $errs})"
  if [[ -n $bad && $bad != 0 ]]; then echo "$s: $sc rep $rep: $bad responses were not 2xx/3xx" >>"$TMP/misbehaviour"; fi
  if [[ -n $errs ]]; then echo "$s: $sc rep $rep: wrk socket errors: $errs" >>"$TMP/misbehaviour"; fi
  # wrk reconnects only when the response says "Connection: close"; a server
  # that keeps the connection open despite the request's header shows here.
  if [[ ($sc == check || $sc == tls-check) && $((o1 - o0)) -lt $((reqs * 98 / 100)) ]]; then
    echo "$s: check rep $rep: $((o1 - o0)) new connections for $reqs requests: Connection: close not honoured" >>"$TMP/misbehaviour"
  fi
}

run_scenario_wrk() { # run_scenario_wrk SCENARIO PATH CONNS
  local sc=$1 rep s
  start_all
  preflight
  for s in "${SERVERS[@]}"; do # short warm-up, not recorded
    timeout 30 wrk -t2 -c"$3" -d1s -s "$TMP/$sc.lua" "$(base_url "$sc" "$s")$2" >/dev/null 2>&1 || true
  done
  for ((rep = 1; rep <= REPS; rep++)); do
    for s in $(order_for_rep "$rep"); do run_wrk "$sc" "$s" "$rep" "$2" "$3"; done
  done
  stop_all
}

run_memory() {
  local s rep=1 out line
  for s in $(order_for_rep 0); do
    start_server "$s"
    wait_quiet
    out=$TMP/memory-$s.txt
    log "memory $s: $SLOW_CONNS slow readers of /daily.cvd (pids $(server_pids "$s"))"
    timeout 400 "$LOADGEN" slow --addr "127.0.0.1:${PORT[$s]}" --path /daily.cvd --conns "$SLOW_CONNS" \
      --source "$SOURCES" --rcvbuf 4096 --read-chunk 4096 --interval-ms 1000 --connect-parallel 256 \
      --ramp-secs 90 --settle-secs 5 --hold-secs "$DURATION" --pids "$(server_pids "$s")" \
      --header "User-Agent: $CLAMAV_UA" >"$out" 2>"$out.err" || { cat "$out.err" >&2; die "loadgen failed ($s)"; }
    cat "$out.err" >&2
    line=$(grep '^RESULT' "$out")
    log "memory $s: ${line#RESULT }"
    printf 'memory\t%s\t%s\t%s\n' "$s" "$rep" "$line" >>"$TMP/memory.tsv"
    kv() { tr ' ' '\n' <<<"$line" | awk -F= -v k="$1" '$1 == k {print $2}'; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' memory "$s" "$rep" "$(kv rss_per_conn_kb)" "$(kv alive)" 0 0 - >>"$RESULTS"
    if [[ $(kv alive) -lt $SLOW_CONNS || $(kv status_200) -lt $SLOW_CONNS ]]; then
      echo "$s: memory: of $SLOW_CONNS slow downloads $(kv status_200) got 200 and $(kv alive) stayed open; $(kv failed) failed to connect or get a response head; other answers:$(tr ' ' '\n' <<<"$line" | grep '^status_[0-9]' | grep -v '^status_200=' | tr '\n' ' ')" >>"$TMP/misbehaviour"
    fi
    stop_server "$s"
    sleep 2
  done
}

# ---------------------------------------------------------------- run
T_START=$(date +%s)
write_lua
log "servers: ${SERVERS[*]}; scenarios: ${SCENARIOS[*]}; ${DURATION}s x $REPS reps; access log: $ACCESS_LOG"
for sc in "${SCENARIOS[@]}"; do
  case $sc in
    check) run_scenario_wrk check /bytecode.cvd "$CONNS" ;;
    ims) run_scenario_wrk ims /bytecode.cvd "$CONNS" ;;
    bulk) run_scenario_wrk bulk /daily.cvd 8 ;;
    memory) run_memory ;;
    tls-check) run_scenario_wrk tls-check /bytecode.cvd "$CONNS" ;;
    tls-bulk) run_scenario_wrk tls-bulk /daily.cvd 8 ;;
  esac
done

# ---------------------------------------------------------------- report
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { awk -F'\t' -v sc="$1" -v s="$2" '$1 == sc && $2 == s {print $4}' "$RESULTS" | median; }
# Median over the runs in which other processes used < 10% of the CPU.
med_quiet() { awk -F'\t' -v sc="$1" -v s="$2" '$1 == sc && $2 == s && $8 != "-" && $8 + 0 < 10 {print $4}' "$RESULTS" | median; }
quiet_ratio() { # quiet_ratio SCENARIO OTHER -> "r (a/b runs)" or "-"
  local c n nc nn
  c=$(med_quiet "$1" cvdmirror) n=$(med_quiet "$1" "$2")
  [[ -n $c && -n $n ]] || { echo "-"; return; }
  nc=$(awk -F'\t' -v sc="$1" '$1 == sc && $2 == "cvdmirror" && $8 != "-" && $8 + 0 < 10' "$RESULTS" | wc -l)
  nn=$(awk -F'\t' -v sc="$1" -v s="$2" '$1 == sc && $2 == s && $8 != "-" && $8 + 0 < 10' "$RESULTS" | wc -l)
  awk -v a="$c" -v b="$n" -v x="$nc" -v y="$nn" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f (%s vs %s; %d+%d runs)", a / b, a, b, x, y }'
}
# Median over repetitions of cvdmirror/other from the same repetition: runs
# next to each other share the machine's background load, so pairing them
# cancels most of its drift.
paired_ratio() { # paired_ratio SCENARIO OTHER
  awk -F'\t' -v sc="$1" -v o="$2" '$1 == sc && $2 == "cvdmirror" { c[$3] = $4 } $1 == sc && $2 == o { n[$3] = $4 }
    END { for (r in c) if ((r in n) && n[r] + 0 != 0) printf "%.4f\n", c[r] / n[r] }' "$RESULTS" | median |
    awk '{ if ($1 == "") print "n/a"; else printf "%.2f\n", $1 }'
}

{
  echo "## Results — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`bench/serve.sh ${SCENARIOS[*]}\` (BENCH_DURATION=$DURATION, BENCH_REPS=$REPS, BENCH_CONNS=$CONNS, BENCH_SLOW_CONNS=$SLOW_CONNS, access log: $ACCESS_LOG, open-file limit $NOFILE); values are medians of $REPS runs, ratios the median of the $REPS same-repetition ratios; whole run $(($(date +%s) - T_START)) s."
  echo
  echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r); $(nginx -v 2>&1 | sed 's/nginx version: //'); $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'); cvdmirror $COMMIT ($(rustc --version | awk '{print $1, $2}'))."
  echo
  printf '| scenario | unit | cvdmirror | nginx | cvdmirror / nginx | better | ratio over quiet runs only |\n|---|---|---:|---:|---:|---|---|\n'
  for sc in "${SCENARIOS[@]}"; do
    case $sc in
      check) label="check: Range 0-511, Connection: close (206, new conn per request, c=$CONNS)"; unit="req/s"; better="higher" ;;
      ims) label="If-Modified-Since → 304, keep-alive (c=$CONNS)"; unit="req/s"; better="higher" ;;
      bulk) label="bulk: 8 concurrent 60 MiB downloads"; unit="MiB/s"; better="higher" ;;
      memory) label="memory: $SLOW_CONNS slow downloads of 60 MiB"; unit="RSS growth kB/conn"; better="lower" ;;
      tls-check) label="tls-check: check over HTTPS, full handshake per request (c=$CONNS)"; unit="req/s"; better="higher" ;;
      tls-bulk) label="tls-bulk: 8 concurrent 60 MiB downloads over HTTPS"; unit="MiB/s"; better="higher" ;;
    esac
    c=pending
    [[ $CVD_PENDING == 0 ]] && c=$(med "$sc" cvdmirror)
    n=$(med "$sc" nginx)
    r=pending
    [[ $CVD_PENDING == 0 ]] && r=$(paired_ratio "$sc" nginx)
    q=-
    [[ $CVD_PENDING == 0 && $sc != memory ]] && q=$(quiet_ratio "$sc" nginx)
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$unit" "${c:-pending}" "$n" "$r" "$better" "$q"
    if [[ $NGINX_OFC == 1 ]]; then
      printf '| %s, nginx with open_file_cache | %s | | %s | %s | %s | %s |\n' "$sc" "$unit" "$(med "$sc" nginx-ofc)" \
        "$([[ $CVD_PENDING == 0 ]] && paired_ratio "$sc" nginx-ofc || echo pending)" "$better" \
        "$([[ $CVD_PENDING == 0 && $sc != memory ]] && quiet_ratio "$sc" nginx-ofc || echo -)"
    fi
  done
  # Server CPU per unit of work: what TLS adds to the same request or byte.
  cpu_unit() { # cpu_unit SCENARIO SERVER -> median CPU ms per request, or CPU s per GiB for bulk
    awk -F'\t' -v sc="$1" -v s="$2" '$1 == sc && $2 == s && $9 != "" && $5 + 0 > 0 {
      if (sc ~ /bulk/) { if ($10 + 0 > 0) printf "%.3f\n", $9 / ($10 / 1073741824) } else printf "%.4f\n", $9 * 1000 / $5 }' "$RESULTS" | median
  }
  cpu_rows=
  for sc in check bulk tls-check tls-bulk; do
    [[ " ${SCENARIOS[*]} " == *" $sc "* ]] || continue
    c=pending
    [[ $CVD_PENDING == 0 ]] && c=$(cpu_unit "$sc" cvdmirror)
    n=$(cpu_unit "$sc" nginx)
    u="server CPU ms per request"
    [[ $sc == *bulk ]] && u="server CPU s per GiB sent"
    cpu_rows+=$(printf '| %s | %s | %s | %s | %s |' "$sc" "$u" "${c:-?}" "${n:-?}" "$(awk -v a="$c" -v b="$n" 'BEGIN { if (b + 0 == 0 || a + 0 == 0) print "-"; else printf "%.2f", a / b }')")$'\n'
  done
  if [[ -n $cpu_rows ]]; then
    echo
    echo "Server CPU per unit of work (medians over the runs; lower is better; clock ticks of the server's processes during each run, so kernel work charged to them is included):"
    echo
    printf '| scenario | unit | cvdmirror | nginx | cvdmirror / nginx |\n|---|---|---:|---:|---:|\n'
    printf '%s' "$cpu_rows"
  fi
  echo
  echo "Per run (scenario, server, rep, value, requests, new TCP connections, non-2xx/3xx, % of the machine's CPU used by other processes during the run, server CPU seconds, bytes):"
  echo
  echo '```'
  cat "$RESULTS"
  echo '```'
  if [[ -s $TMP/memory.tsv ]]; then
    echo
    echo "Memory runs (kB; RSS summed over the server's processes; kernel TCP = all sockets' buffers, machine-wide):"
    echo
    echo '```'
    cut -f2,4 "$TMP/memory.tsv" | sed 's/RESULT mode=slow //'
    echo '```'
  fi
  busy=$(awk -F'\t' '$8 != "-" && $8 + 0 > 10 { n++ } END { print n + 0 }' "$RESULTS")
  if [[ $busy -gt 0 ]]; then
    echo
    echo "Warning: in $busy run(s) other processes used more than 10% of the machine's CPU; those numbers are skewed (the ratio less so when both servers were hit alike). Re-run on an idle machine."
  fi
  if [[ -s $TMP/misbehaviour ]]; then
    echo
    echo "Observed misbehaviour:"
    echo
    sort -u "$TMP/misbehaviour" | sed 's/^/- /'
  fi
} >"$TMP/report.md"
echo
cat "$TMP/report.md"
if [[ -n ${BENCH_OUT:-} ]]; then cp "$TMP/report.md" "$BENCH_OUT"; log "report written to $BENCH_OUT"; fi
