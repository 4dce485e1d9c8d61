#!/usr/bin/env bash
# bench/incident.sh — replay the incident: a freshclam herd on a 100 Mbit/s
# link shared with a website, against nginx (plain and limited) and cvdmirror.
#
# Usage: bench/incident.sh            (~12 minutes plus the build)
#        INCIDENT_QUICK=1 bench/incident.sh   (~3 minutes, smaller herd)
#
# Everything runs inside a network namespace this script creates, whose
# loopback is shaped to the link rate (tbf, MTU 1500): servers, the website
# probe and the herd. Setups, one after another with the same seeded herd:
#   nginx            nginx, no limits (mirror and website on two ports)
#   nginx-limits     nginx with limit_conn/limit_rate tuned like the gate
#                    (see bench/incident/README.md for why these settings)
#   cvdmirror        cvdmirror --link-rate CAP, herd gate --bulk-min-rate MIN,
#                    website as a [[site]] on the same server
#   cvdmirror-nogate cvdmirror with --link-rate only
# Each setup: idle probe baseline, then probe + herd until every client holds
# the file or the deadline.
#
# Knobs (environment; defaults full / quick):
#   INCIDENT_SETUPS ("nginx nginx-limits cvdmirror cvdmirror-nogate")
#   INCIDENT_CLIENTS (300 / 150)   INCIDENT_ARRIVE_SECS (60 / 8)
#   INCIDENT_DAILY_MIB (5 / 2)     scaled daily.cvd (real: 60 MB)
#   INCIDENT_LINK_MBIT (100)       INCIDENT_CAP_MBIT (85): cvdmirror --link-rate
#                                  and nginx-limits' aggregate
#   INCIDENT_MIN_MBIT (2)          --bulk-min-rate
#   INCIDENT_RA_MIN / _MAX (5 / 3, 75 / 20): Retry-After window, seconds
#                                  (production default 60-900 s, scaled 1:12)
#   INCIDENT_STALL_SECS (60)       freshclam ReceiveTimeout
#   INCIDENT_DEADLINE_SECS (420 / 150) per setup
#   INCIDENT_IDLE_SECS (30 / 8)    idle probe baseline per setup
#   INCIDENT_SEED (1)              INCIDENT_RECORD (1 / 0): add the report to
#                                  the top of bench/results/incident.md
#   INCIDENT_OUT=FILE              also write the report here
#   INCIDENT_SHAPE_BURST           e.g. 6ms: cvdmirror's [shape] burst (default 4ms;
#                                  at least the 2 ms tick + 2ms)
#   INCIDENT_KERNEL_PACING=1       cvdmirror's [shape] kernel_pacing (SO_MAX_PACING_RATE)
#   INCIDENT_SHAPE_EXTRA           more [shape] lines for cvdmirror, e.g. 'tick = "1ms"\nburst = "3ms"'
#   CVDMIRROR_BIN                  skip the build, use this binary
#   INCIDENT_KEEP_TMP=1            keep the work directory
#
# Needs root (network namespace, tc). Bounded loops; on exit or Ctrl-C kills
# what it started and deletes the namespace (and with it the qdisc).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=incident
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

QUICK=${INCIDENT_QUICK:-0}
SETUPS_STR=${INCIDENT_SETUPS:-nginx nginx-limits cvdmirror cvdmirror-nogate}
CLIENTS=${INCIDENT_CLIENTS:-$(q 300 150)}
ARRIVE=${INCIDENT_ARRIVE_SECS:-$(q 60 8)}
DAILY_MIB=${INCIDENT_DAILY_MIB:-$(q 5 2)}
LINK=${INCIDENT_LINK_MBIT:-100}
CAP=${INCIDENT_CAP_MBIT:-85}
MIN=${INCIDENT_MIN_MBIT:-2}
RA_MIN=${INCIDENT_RA_MIN:-$(q 5 3)}
RA_MAX=${INCIDENT_RA_MAX:-$(q 75 20)}
STALL=${INCIDENT_STALL_SECS:-60}
DEADLINE=${INCIDENT_DEADLINE_SECS:-$(q 420 150)}
IDLE=${INCIDENT_IDLE_SECS:-$(q 30 8)}
SEED=${INCIDENT_SEED:-1}
RECORD=${INCIDENT_RECORD:-$(q 1 0)}
DAILY_BYTES=$((DAILY_MIB * 1024 * 1024))
WWW_HOST=www.bench.test
NS=cvdinc-$$


read -r -a SETUPS <<<"$SETUPS_STR"
for s in "${SETUPS[@]}"; do
  case $s in nginx | nginx-limits | cvdmirror | cvdmirror-nogate) ;; *) die "unknown setup '$s'" ;; esac
done
for v in CLIENTS ARRIVE DAILY_MIB LINK CAP MIN RA_MIN RA_MAX STALL DEADLINE IDLE SEED; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer"
done
((CLIENTS <= 5000 && DEADLINE <= 1200 && IDLE <= 120 && ARRIVE <= 600 && DAILY_MIB <= 100)) ||
  die "bounds: clients <= 5000, deadline <= 1200 s, idle <= 120 s, arrive <= 600 s, daily <= 100 MiB"
((CAP <= LINK && RA_MIN <= RA_MAX && MIN <= CAP)) || die "need CAP <= LINK, RA_MIN <= RA_MAX, MIN <= CAP"
[[ $(id -u) == 0 ]] || die "needs root (network namespace, tc)"

need ip iproute2
need tc iproute2
need nginx nginx
need curl curl
need pgrep procps
command -v cargo >/dev/null 2>&1 || die "cargo is required"
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited || $NOFILE -gt 65536 ]] && NOFILE=65536
ulimit -n "$NOFILE"

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d /tmp/cvdincident.XXXXXX)
STARTED_PIDS=()
NS_MADE=0
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${STARTED_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  # Anything still inside our namespace was started by this script.
  if [[ $NS_MADE == 1 ]]; then
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    sleep 0.2
  fi
  if [[ $NS_MADE == 1 ]]; then ip netns del "$NS" 2>/dev/null || log "warning: could not delete namespace $NS"; fi
  if [[ ${INCIDENT_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
cd "$REPO"
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD -- src crates Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT (with local changes)"
git diff --quiet HEAD -- src Cargo.toml Cargo.lock bench 2>/dev/null || COMMIT="$COMMIT (with local changes)"
if [[ -n ${CVDMIRROR_BIN:-} ]]; then
  CVD_BIN=$CVDMIRROR_BIN
else
  log "building cvdmirror (release; can take 10+ minutes on a busy machine)"
  cargo build --release --quiet --bin cvdmirror
  CVD_BIN=$REPO/target/release/cvdmirror
fi
"$CVD_BIN" serve --help 2>&1 | grep -q -- '--bulk-min-rate' || die "$CVD_BIN has no --bulk-min-rate"
log "building cvdmirror-loadgen (release)"
cargo build --release --quiet -p cvdmirror-loadgen
LOADGEN=$REPO/target/release/cvdmirror-loadgen

# ---------------------------------------------------------------- namespace
ip netns add "$NS"
NS_MADE=1
# For foreground commands only: "nsx cmd &" would give $! of a subshell, not
# of cmd; background launches use "ip netns exec" directly, which execs cmd.
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo mtu 1500
nsx ip link set lo up
nsx tc qdisc add dev lo root tbf rate "${LINK}mbit" burst 32kb latency 50ms
log "namespace $NS: lo at ${LINK} Mbit/s (tbf burst 32kb latency 50ms, MTU 1500)"
tc_counters() { # -> "bytes dropped" sent through the shaped loopback so far
  nsx tc -s qdisc show dev lo | awk '/Sent/ { for (i = 1; i <= NF; i++) { if ($i == "Sent") b = $(i + 1); if ($i == "(dropped") d = $(i + 1) } }
    END { sub(/,/, "", d); printf "%.0f %.0f\n", b, d }'
}

# ---------------------------------------------------------------- data
write_herd_data cvdincident

# ---------------------------------------------------------------- servers
# Retry-After for nginx-limits: 16 values spread over the window, picked by
# the last hex digit of the random $request_id (stock nginx has no jitter).
ra_map() {
  local i
  for i in $(seq 0 15); do
    printf '    ~%x$ %d;\n' "$i" $((RA_MIN + (RA_MAX - RA_MIN) * i / 15))
  done
}
BULK_CONNS=$((CAP / MIN))
PER_CONN_BYTES=$((MIN * 1000000 / 8))

write_nginx_conf() { # NAME MIRROR_PORT WWW_PORT LIMITS(0|1)
  local pfx=$TMP/$1 limits_http="" limits_loc=""
  mkdir -p "$pfx/logs" "$pfx/tmp"
  if [[ $4 == 1 ]]; then
    limits_http="
  # Only whole downloads count (header checks carry Range; an empty key is not limited).
  map \$http_range \$bulk_key { \"\" \$server_port; default \"\"; }
  map \$http_range \$bulk_ip { \"\" \$binary_remote_addr; default \"\"; }
  limit_conn_zone \$bulk_key zone=bulk_total:1m;
  limit_conn_zone \$bulk_ip zone=bulk_ip:10m;
  map \$request_id \$ra_jitter {
$(ra_map)
  }
  map \$status \$retry_after { 429 \$ra_jitter; default \"\"; }"
    limits_loc="
      # At most CAP/MIN = $BULK_CONNS whole downloads at once, each at most MIN
      # ($PER_CONN_BYTES bytes/s), so the mirror stays under ${CAP} Mbit/s;
      # one per client; beyond that 429 with a (coarsely) jittered Retry-After.
      limit_conn bulk_total $BULK_CONNS;
      limit_conn bulk_ip 1;
      limit_conn_status 429;
      limit_rate $PER_CONN_BYTES;
      add_header Retry-After \$retry_after always;"
  fi
  cat >"$pfx/nginx.conf" <<EOF
# Written by bench/incident.sh ($1).
user www-data;
worker_processes 2;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $pfx/nginx.pid;
error_log $pfx/logs/error.log warn;
events { worker_connections 20000; }
http {
  types { application/octet-stream cvd cld cdiff; text/html html; }
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  access_log off;
  if_modified_since before;
  client_body_temp_path $pfx/tmp/body;
  proxy_temp_path $pfx/tmp/proxy;
  fastcgi_temp_path $pfx/tmp/fastcgi;
  uwsgi_temp_path $pfx/tmp/uwsgi;
  scgi_temp_path $pfx/tmp/scgi;$limits_http
  server {
    listen 127.0.0.1:$2 backlog=4096;
    root $MIRROR;
    location / { }
    location ~ \\.cvd\$ {$limits_loc
    }
  }
  server {
    listen 127.0.0.1:$3 backlog=4096;
    root $WWW;
    location / { }
  }
}
EOF
  nsx nginx -t -q -p "$pfx" -c "$pfx/nginx.conf" -e "$pfx/logs/error.log" || die "nginx config $1 is invalid"
}

write_cvd_conf() { # NAME PORT GATE(0|1)
  local pfx=$TMP/$1
  mkdir -p "$pfx"
  {
    cat <<EOF
# Written by bench/incident.sh ($1).
listen = ["127.0.0.1:$2"]
root = "$MIRROR"
access_log = "off"
max_connections = 20000

[[site]]
name = "www"
hosts = ["$WWW_HOST"]
root = "$WWW"

[shape]
link_rate = "${CAP}Mbit"
EOF
    [[ -z ${INCIDENT_SHAPE_BURST:-} ]] || echo "burst = \"$INCIDENT_SHAPE_BURST\""
    [[ ${INCIDENT_KERNEL_PACING:-0} != 1 ]] || echo "kernel_pacing = true"
    [[ -z ${INCIDENT_SHAPE_EXTRA:-} ]] || printf '%b\n' "$INCIDENT_SHAPE_EXTRA"
    if [[ $3 == 1 ]]; then
      cat <<EOF

[limits.herd]
bulk_min_rate = "${MIN}Mbit"
retry_after_min = "${RA_MIN}s"
retry_after_max = "${RA_MAX}s"
EOF
    fi
  } >"$pfx/cvdmirror.toml"
}

declare -A MPORT WPORT WHOST PID
start_setup() { # NAME INDEX
  local name=$1 mp=$((8000 + 10 * $2)) p
  MPORT[$name]=$mp
  case $name in
    nginx | nginx-limits)
      WPORT[$name]=$((mp + 1))
      WHOST[$name]=localhost
      write_nginx_conf "$name" "$mp" "$((mp + 1))" "$([[ $name == nginx-limits ]] && echo 1 || echo 0)"
      ip netns exec "$NS" nginx -p "$TMP/$name" -c "$TMP/$name/nginx.conf" -e "$TMP/$name/logs/error.log" &
      p=$!
      ;;
    cvdmirror | cvdmirror-nogate)
      WPORT[$name]=$mp
      WHOST[$name]=$WWW_HOST
      write_cvd_conf "$name" "$mp" "$([[ $name == cvdmirror ]] && echo 1 || echo 0)"
      ip netns exec "$NS" env TOKIO_WORKER_THREADS=2 "$CVD_BIN" serve -c "$TMP/$name/cvdmirror.toml" \
        >"$TMP/$name/out.log" 2>"$TMP/$name/err.log" &
      p=$!
      ;;
  esac
  STARTED_PIDS+=("$p")
  PID[$name]=$p
  for _ in $(seq 100); do
    kill -0 "$p" 2>/dev/null || break
    nsx curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$mp/daily-27830.cdiff" 2>/dev/null && return 0
    sleep 0.1
  done
  tail -5 "$TMP/$name/err.log" "$TMP/$name/logs/error.log" 2>/dev/null >&2 || true
  die "$name did not start"
}

stop_setup() {
  local p=${PID[$1]:-}
  [[ -n $p ]] || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    echo "$1: did not stop within 10 s of SIGTERM" >>"$TMP/misbehaviour"
    kill -KILL "$p" 2>/dev/null || true
  fi
  wait "$p" 2>/dev/null || true
  PID[$1]=
}

preflight() { # NAME
  local n=$1 mp=${MPORT[$1]} got
  check() { # WHAT WANT CURL_ARGS...
    local what=$1 want=$2
    shift 2
    got=$(nsx curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 "$@" 2>&1 || true)
    log "preflight $n: $what -> $got (want $want)"
    [[ $got == "$want" ]] || echo "$n: preflight $what answered '$got', expected '$want'" >>"$TMP/misbehaviour"
  }
  check "header check" "206 512" -H 'Range: bytes=0-511' -H "If-Modified-Since: $IMS_OLD" "http://127.0.0.1:$mp/daily.cvd"
  check "missing cdiff" "404" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mp/daily-27829.cdiff"
  check "website" "200 8192" -H "Host: ${WHOST[$n]}" "http://127.0.0.1:${WPORT[$n]}/index.html"
  got=$(nsx curl -sS -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' --max-time 60 "http://127.0.0.1:$mp/daily.cvd" 2>&1 || true)
  log "preflight $n: one download alone -> $got (code, bytes, bytes/s)"
  SOLO[$n]=$(awk '{ printf "%.1f", $3 * 8 / 1e6 }' <<<"$got")
  [[ ${got% *} == "200 $DAILY_BYTES" ]] || echo "$n: preflight full download answered '${got% *}', expected '200 $DAILY_BYTES'" >>"$TMP/misbehaviour"
}

# ---------------------------------------------------------------- measuring
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
cpu_total_all() { awk '/^cpu / { s = 0; for (i = 2; i <= NF; i++) s += $i; print s; exit }' /proc/stat; }
cpu_of_tree() { # PID -> utime+stime ticks of it and its children
  local p t=0 f
  for p in $1 $(pgrep -P "$1" || true); do
    f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + $(awk '{ print $12 + $13 }' <<<"$f")))
  done
  echo "$t"
}





declare -A SOLO
RESULTS=$TMP/results.tsv
: >"$RESULTS"

run_setup() { # NAME INDEX
  local n=$1 idle_file=$TMP/$1.idle.tsv probe_file=$TMP/$1.probe.tsv out=$TMP/$1.herd.txt
  local idle busy herd probe_pid b0 s0 sv tc0 secs others lo hi cap line
  log "=== $n"
  start_setup "$n" "$2"
  preflight "$n"
  sleep 2
  log "$n: idle probe baseline, ${IDLE}s"
  local ib0 it0 bg steal_pid steal_file=$TMP/$1.steal.tsv idle_t0 idle_t1 calm_idle calm_busy steal_idle steal_busy
  "$LOADGEN" steal --out "$steal_file" --duration-secs $((IDLE + DEADLINE + 120)) >/dev/null &
  steal_pid=$!
  STARTED_PIDS+=("$steal_pid")
  ib0=$(cpu_total_busy) it0=$(cpu_total_all) idle_t0=$(date +%s%3N)
  nsx "$LOADGEN" probe --addr "127.0.0.1:${WPORT[$n]}" --host "${WHOST[$n]}" --path /index.html \
    --duration-secs "$IDLE" --out "$idle_file" >/dev/null
  idle_t1=$(date +%s%3N)
  idle=$(probe_stats "$idle_file" 0 99999999999999)
  bg=$(awk -v b="$(($(cpu_total_busy) - ib0))" -v t="$(($(cpu_total_all) - it0))" 'BEGIN { if (t > 0) printf "%.0f", b / t * 100; else print 0 }')
  log "$n: machine CPU busy during the idle baseline: ${bg}%"
  log "$n: idle probe n p50 p99 failures = $idle"
  ip netns exec "$NS" "$LOADGEN" probe --addr "127.0.0.1:${WPORT[$n]}" --host "${WHOST[$n]}" --path /index.html \
    --duration-secs $((DEADLINE + 30)) --out "$probe_file" >/dev/null &
  probe_pid=$!
  STARTED_PIDS+=("$probe_pid")
  sleep 1
  read -r tc0 _ <<<"$(tc_counters)"
  local d0
  read -r _ d0 <<<"$(tc_counters)"
  b0=$(cpu_total_busy) s0=$(cpu_of_tree "${PID[$n]}")
  log "$n: herd of $CLIENTS clients arriving within ${ARRIVE}s, ${DAILY_MIB} MiB each (deadline ${DEADLINE}s)"
  timeout $((DEADLINE + 60)) ip netns exec "$NS" "$LOADGEN" herd --addr "127.0.0.1:${MPORT[$n]}" --host mirror.bench.test \
    --clients "$CLIENTS" --arrive-secs "$ARRIVE" --size "$DAILY_BYTES" --cvd /daily.cvd \
    --cdiff /daily-27829.cdiff --ims "$IMS_OLD" --seed "$SEED" --deadline-secs "$DEADLINE" \
    --stall-secs "$STALL" --retry-secs 5 --attempts 3 --source-base 127.1.0.0 --out "$TMP/$n" >"$out" 2>"$out.err" ||
    { cat "$out.err" >&2; die "herd failed ($n)"; }
  sv=$(($(cpu_of_tree "${PID[$n]}") - s0))
  herd=$(grep '^RESULT' "$out")
  local t1 d1
  read -r t1 d1 <<<"$(tc_counters)"
  kill -TERM "$probe_pid" 2>/dev/null || true
  wait "$probe_pid" 2>/dev/null || true
  secs=$(awk -v a="$(kv start_unix_ms "$herd")" -v b="$(kv end_unix_ms "$herd")" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
  others=$(awk -v b="$(($(cpu_total_busy) - b0))" -v sv="$sv" -v h="$(kv cpu_ticks "$herd")" -v hz="$HZ" -v n="$NCPU" -v d="$secs" \
    'BEGIN { o = (b - sv - h) / (hz * n * d) * 100; if (o < 0) o = 0; printf "%.0f", o }')
  local servercpu
  servercpu=$(awk -v sv="$sv" -v hz="$HZ" -v n="$NCPU" -v d="$secs" 'BEGIN { printf "%.0f", sv / (hz * n * d) * 100 }')
  # The probe's busy window: first full-download request until the last
  # client held the file (or the herd's end).
  lo=$(($(kv start_unix_ms "$herd") + $(kv first_full_ms "$herd")))
  if [[ $(kv all_done_s "$herd") == never ]]; then hi=$(kv end_unix_ms "$herd"); else hi=$(($(kv start_unix_ms "$herd") + $(kv last_done_ms "$herd"))); fi
  busy=$(probe_stats "$probe_file" "$lo" "$hi")
  kill -TERM "$steal_pid" 2>/dev/null || true
  wait "$steal_pid" 2>/dev/null || true
  calm_idle=$(probe_stats_calm "$idle_file" "$steal_file" 0 99999999999999)
  calm_busy=$(probe_stats_calm "$probe_file" "$steal_file" "$lo" "$hi")
  steal_idle=$(steal_share "$steal_file" "$idle_t0" "$idle_t1")
  steal_busy=$(steal_share "$steal_file" "$lo" "$hi")
  log "$n: probes without stolen CPU time: idle n p50 p99 failures = $calm_idle, busy = $calm_busy; CPU stolen by the host: idle ${steal_idle}%, busy ${steal_busy}%"
  stop_setup "$n"
  case $n in nginx) cap=$LINK ;; *) cap=$CAP ;; esac
  log "$n: ${herd#RESULT }"
  log "$n: busy probe n p50 p99 failures = $busy; server CPU ${servercpu}%, others' CPU ${others}%; link bytes $((t1 - tc0)), tbf drops $((d1 - d0))"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$cap" "$idle" "$busy" "$herd" "$servercpu" "$others" \
    "$(awk -v b="$((t1 - tc0))" -v s="$secs" 'BEGIN { printf "%.1f", b * 8 / s / 1e6 }')" "$((d1 - d0))" "${SOLO[$n]}" "$bg" \
    "$calm_idle" "$calm_busy" "$steal_idle" "$steal_busy" >>"$RESULTS"
  line=$herd
  if [[ $n == cvdmirror* ]]; then
    awk -v p="$(kv peak_1s_mbit "$line")" -v c="$CAP" 'BEGIN { exit !(p > c * 1.10) }' &&
      echo "$n: a 1 s window carried $(kv peak_1s_mbit "$line") Mbit/s of CVD bodies, more than 110% of --link-rate ${CAP}Mbit (see $n.timeline.tsv)" >>"$TMP/misbehaviour"
    [[ $(kv completed "$line") == "$CLIENTS" ]] ||
      echo "$n: only $(kv completed "$line") of $CLIENTS clients got the whole file within ${DEADLINE}s ($(kv gave_up "$line") gave up)" >>"$TMP/misbehaviour"
  fi
  if [[ $n == cvdmirror ]]; then
    local maxact
    maxact=$(awk -F'\t' 'NR > 1 && $3 > m { m = $3 } END { print m + 0 }' "$TMP/$n.timeline.tsv")
    ((maxact <= CAP / MIN + 1)) ||
      echo "$n: up to $maxact whole downloads ran at once; the gate should admit at most $((CAP / MIN)) (${CAP}Mbit / ${MIN}Mbit)" >>"$TMP/misbehaviour"
  fi
  sleep 2
}

# ---------------------------------------------------------------- run
T_START=$(date +%s)
log "setups: ${SETUPS[*]}; $CLIENTS clients, ${DAILY_MIB} MiB daily.cvd, link ${LINK} Mbit/s, cap ${CAP} Mbit/s"
i=0
for s in "${SETUPS[@]}"; do
  i=$((i + 1))
  run_setup "$s" "$i"
done

# ---------------------------------------------------------------- report
p99_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "fail" || a == "-" || b == "fail" || b == "-" || b + 0 == 0) print "-"; else printf "%.1f×", a / b }'; }

row() { # one Markdown row from a results line
  local n=$1 cap=$2 idle=$3 busy=$4 herd=$5 server=$6 others=$7 linkm=$8 drops=$9 bg=${11}
  local calm_idle=${12} calm_busy=${13} steal_idle=${14} steal_busy=${15}
  local ip50 ip99 bn bp50 bp99 bf mean pct all cip99 cbn cbp50 cbp99
  read -r _ ip50 ip99 _ <<<"$idle"
  read -r bn bp50 bp99 bf <<<"$busy"
  mean=$(kv busy_mean_mbit "$herd")
  pct=$(awk -v m="$mean" -v c="$cap" 'BEGIN { printf "%.0f", m / c * 100 }')
  all=$(kv all_done_s "$herd")
  [[ $all == never ]] && all="never"
  [[ $all != never ]] && all="${all} s"
  read -r _ _ cip99 _ <<<"$calm_idle"
  read -r cbn cbp50 cbp99 _ <<<"$calm_busy"
  local ratio cratio
  ratio=$(p99_ratio "$bp99" "$ip99")
  cratio=$(p99_ratio "$cbp99" "$cip99")
  printf '| %s | %s / %s | %s / %s (%s) | %s / %s (%s; %s of %s probes) vs idle %s | %s%% / %s%% | %s/%s | %s of %s (%s%%); peak 1 s %s | %s | %s | %s/%s (%s gave up) | %.1f | %s | %s | %s | %s%% / %s%% / %s%% |\n' \
    "$n" "$ip50" "$ip99" "$bp50" "$bp99" "$ratio" "$cbp50" "$cbp99" "$cratio" "$cbn" "$bn" "$cip99" "$steal_idle" "$steal_busy" \
    "$bf" "$bn" "$mean" "$cap" "$pct" "$(kv peak_1s_mbit "$herd")" \
    "$(kv jain_mean "$herd")" "$all" "$(kv completed "$herd")" "$CLIENTS" "$(kv gave_up "$herd")" \
    "$(awk -v w="$(kv wasted_bytes "$herd")" 'BEGIN { print w / 1048576 }')" "$(kv s429 "$herd")" "$(kv requests "$herd")" \
    "$linkm / $drops" "$server" "$others" "$bg"
}

{
  echo "## Incident replay — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`$([[ $QUICK == 1 ]] && echo 'INCIDENT_QUICK=1 ')bench/incident.sh\` — $CLIENTS freshclam clients arriving within ${ARRIVE} s, each needing the whole ${DAILY_MIB} MiB daily.cvd (scaled from 60 MB), on a ${LINK} Mbit/s link (network namespace, tbf on lo) shared with a website probed every 100 ms (2 s timeout). cvdmirror: \`--link-rate ${CAP}Mbit\`$([[ " ${SETUPS[*]} " == *" cvdmirror "* ]] && echo ", gate \`--bulk-min-rate ${MIN}Mbit\`, Retry-After ${RA_MIN}–${RA_MAX} s"); nginx-limits: at most $BULK_CONNS whole downloads × ${MIN} Mbit/s, 1 per client, 429 + Retry-After ${RA_MIN}–${RA_MAX} s. Stall timeout ${STALL} s, deadline ${DEADLINE} s per setup, seed $SEED; whole run $(($(date +%s) - T_START)) s."
  echo
  echo "Machine: $NCPU cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r); $(nginx -v 2>&1 | sed 's/nginx version: //'); cvdmirror $COMMIT ($(rustc --version | awk '{print $1, $2}'))."
  echo
  echo '| setup | probe idle p50 / p99 ms | probe during herd p50 / p99 ms (p99 vs idle) | same, requests the host stole no CPU from: p50 / p99 ms (p99 vs idle; n) | CPU stolen by the host: idle / herd | probe failures | CVD throughput over busy period, Mbit/s of cap | Jain (mean per s) | all clients hold the file after | completed | wasted MiB | 429s | requests | link Mbit/s / tbf drops | CPU: server / others during herd / machine during idle |'
  echo '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
  while IFS=$'\t' read -r -a f; do row "${f[@]}"; done <"$RESULTS"
  echo
  echo "Goal (cvdmirror row): probe p99 within 2× of idle, ≥ 90 % of the cap used, every client completes:"
  while IFS=$'\t' read -r -a f; do
    [[ ${f[0]} == cvdmirror ]] || continue
    read -r _ _ ip99 _ <<<"${f[2]}"
    read -r _ _ bp99 bf <<<"${f[3]}"
    m=$(kv busy_mean_mbit "${f[4]}")
    v1=$(awk -v a="$bp99" -v b="$ip99" 'BEGIN { print (a != "fail" && a + 0 <= 2 * b) ? "met" : "NOT met" }')
    read -r _ _ cip99 _ <<<"${f[11]}"
    read -r _ _ cbp99 _ <<<"${f[12]}"
    v0=$(awk -v a="$cbp99" -v b="$cip99" 'BEGIN { print (a != "fail" && a != "-" && b != "-" && a + 0 <= 2 * b) ? "met" : "NOT met" }')
    v2=$(awk -v m="$m" -v c="$CAP" 'BEGIN { print (m >= 0.9 * c) ? "met" : "NOT met" }')
    v3=$([[ $(kv completed "${f[4]}") == "$CLIENTS" ]] && echo met || echo "NOT met")
    echo "p99 $bp99 vs idle $ip99 ms: $v1 (over the requests the host stole no CPU from, $cbp99 vs $cip99 ms: $v0; CPU stolen during the herd: ${f[14]}%); $m of $CAP Mbit/s: $v2; $(kv completed "${f[4]}")/$CLIENTS completed: $v3; probe failures: $bf."
  done <"$RESULTS"
  echo
  echo "Per setup (herd RESULT line; server CPU %, others' CPU %, one download alone Mbit/s):"
  echo
  echo '```'
  awk -F'\t' '{ print $1 ": " $5; print $1 ": server CPU " $6 "%, others CPU " $7 "%, machine busy during idle baseline " $11 "%, one download alone " $10 " Mbit/s" }' "$RESULTS" | sed 's/RESULT mode=herd //'
  echo '```'
  busy=$(awk -F'\t' '$7 + 0 > 10 { n++ } END { print n + 0 }' "$RESULTS")
  if [[ $busy -gt 0 ]]; then
    echo
    echo "Warning: in $busy setup(s) other processes used more than 10% of the machine's CPU."
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
if [[ -n ${INCIDENT_OUT:-} ]]; then cp "$TMP/report.md" "$INCIDENT_OUT"; log "report written to $INCIDENT_OUT"; fi
if [[ $RECORD == 1 ]]; then
  # Newest first, below the file's own header (its first "## " section).
  results="$REPO/bench/results/incident.md"
  awk -v report="$TMP/report.md" '
    !done && /^## / { while ((getline line < report) > 0) print line; print ""; done = 1 }
    { print }
    END { if (!done) { while ((getline line < report) > 0) print line } }
  ' "$results" >"$TMP/results.md" && mv "$TMP/results.md" "$results"
  log "recorded at the top of $results; copy the table into BENCHMARKS.md"
fi
