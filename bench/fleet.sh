#!/usr/bin/env bash
# bench/fleet.sh — three cvdmirror nodes joined through Redis, each on its
# own emulated 100 Mbit/s link, against one node alone, in the same run
# (issue #13).
#
# Usage: bench/fleet.sh                 (~8 minutes plus the builds)
#        FLEET_QUICK=1 bench/fleet.sh   (~2 minutes, smaller herd, shorter)
#
# Stage (network namespaces this script creates and always deletes):
#   cvdfl-PID-c    the clients' side: the herd, the website probes, Redis
#                  (redis-server, no persistence), wrk; its lo has AnyIP
#                  10.212.0.0/16 so every simulated client has its own address
#   cvdfl-PID-nI   node I (1..3) at 10.211.I.1:8080, joined to the clients'
#                  side by a veth pair (10.211.I.2 there) whose node end is
#                  shaped to the link rate (tbf, MTU 1500): node I's uplink
# No namespace has a default route; nothing outside them is ever reached.
#
# Scenarios, one after another:
#   A  single   node 1 alone (no --fleet), CLIENTS freshclam-like clients
#               (the herd of bench/incident.sh: header check, missing cdiff
#               three times, whole daily.cvd), cvdmirror set up as
#               incident.sh's `cvdmirror` setup (--link-rate CAP, herd gate)
#   B  fleet    nodes 1..3 with --fleet/--node/--public-url, 3 x CLIENTS
#               clients assigned to the nodes by weighted round robin over
#               FLEET_SPLIT (50,30,20: uneven, so redirects have to balance
#               it; 1,1,1 is DNS round robin); every 302 is followed
#   C  cost     freshclam's header check (GET /daily.cvd, Range: bytes=0-511)
#               with wrk against one node with --fleet and the same node
#               without, on the clients' side's unshaped loopback,
#               interleaved repetitions; with Connection: close (as
#               bench/serve.sh's `check`) and with keep-alive; both nodes
#               without [shape] and herd gate, as serve.sh's cvdmirror
# A and B: idle probe baseline on each node, then probes (one page every
# 100 ms per node, as incident.sh) during the herd.
#
# Knobs (environment; defaults full / quick):
#   FLEET_CLIENTS (300 / 150)      scenario A's herd; B has three times as many
#   FLEET_ARRIVE_SECS (60 / 8)     A's arrival window (B: the same window)
#   FLEET_DAILY_MIB (5 / 2)        scaled daily.cvd
#   FLEET_SPLIT (50,30,20)         B's share of clients per node
#   FLEET_LINK_MBIT (100)          FLEET_CAP_MBIT (85): --link-rate
#   FLEET_MIN_MBIT (2)             --bulk-min-rate
#   FLEET_RA_MIN / _MAX (5 / 3, 75 / 20): Retry-After window, seconds
#   FLEET_STALL_SECS (60)          FLEET_DEADLINE_SECS (420 / 150) per herd
#   FLEET_IDLE_SECS (30 / 8)       idle probe baseline
#   FLEET_CHECK_SECS (5 / 3)       FLEET_CHECK_REPS (3 / 2)   scenario C
#   FLEET_CHECK_CONNS (64)         wrk connections in C
#   FLEET_SEED (1)
#   FLEET_RECORD (1 / 0)           add the report to the top of bench/results/fleet.md
#   FLEET_OUT=FILE                 also write the report here
#   CVDMIRROR_BIN                  skip the build, use this binary
#   LOADGEN_BIN                    skip the loadgen's build (it links the cvdmirror library)
#   FLEET_KEEP_TMP=1               keep the work directory
#
# Needs root (network namespaces, tc). Bounded loops; on exit or Ctrl-C it
# kills what it started and deletes its namespaces (and with them the qdiscs).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=fleet
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

QUICK=${FLEET_QUICK:-0}
CLIENTS=${FLEET_CLIENTS:-$(q 300 150)}
ARRIVE=${FLEET_ARRIVE_SECS:-$(q 60 8)}
DAILY_MIB=${FLEET_DAILY_MIB:-$(q 5 2)}
SPLIT=${FLEET_SPLIT:-50,30,20}
LINK=${FLEET_LINK_MBIT:-100}
CAP=${FLEET_CAP_MBIT:-85}
MIN=${FLEET_MIN_MBIT:-2}
RA_MIN=${FLEET_RA_MIN:-$(q 5 3)}
RA_MAX=${FLEET_RA_MAX:-$(q 75 20)}
STALL=${FLEET_STALL_SECS:-60}
DEADLINE=${FLEET_DEADLINE_SECS:-$(q 420 150)}
IDLE=${FLEET_IDLE_SECS:-$(q 30 8)}
CHECK_SECS=${FLEET_CHECK_SECS:-$(q 5 3)}
CHECK_REPS=${FLEET_CHECK_REPS:-$(q 3 2)}
CHECK_CONNS=${FLEET_CHECK_CONNS:-64}
SEED=${FLEET_SEED:-1}
RECORD=${FLEET_RECORD:-$(q 1 0)}
DAILY_BYTES=$((DAILY_MIB * 1024 * 1024))
FLEET_CLIENTS_N=$((3 * CLIENTS))
WWW_HOST=www.bench.test
PORT=8080
NSC=cvdfl-$$-c
NODES=(1 2 3)

for v in CLIENTS ARRIVE DAILY_MIB LINK CAP MIN RA_MIN RA_MAX STALL DEADLINE IDLE CHECK_SECS CHECK_REPS CHECK_CONNS SEED; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer"
done
[[ $SPLIT =~ ^[0-9]+,[0-9]+,[0-9]+$ ]] || die "FLEET_SPLIT must be three weights, e.g. 50,30,20"
((CLIENTS <= 3000 && DEADLINE <= 1200 && IDLE <= 120 && ARRIVE <= 600 && DAILY_MIB <= 100 && CHECK_SECS <= 60 && CHECK_REPS <= 10)) ||
  die "bounds: clients <= 3000, deadline <= 1200 s, idle <= 120 s, arrive <= 600 s, daily <= 100 MiB, check <= 60 s x 10"
((CAP <= LINK && RA_MIN <= RA_MAX && MIN <= CAP)) || die "need CAP <= LINK, RA_MIN <= RA_MAX, MIN <= CAP"
[[ $(id -u) == 0 ]] || die "needs root (network namespaces, tc)"

need ip iproute2
need tc iproute2
need curl curl
need wrk wrk
need pgrep procps
need redis-server redis-server
command -v cargo >/dev/null 2>&1 || [[ -n ${CVDMIRROR_BIN:-} ]] || die "cargo is required"
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited || $NOFILE -gt 65536 ]] && NOFILE=65536
ulimit -n "$NOFILE"

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d /tmp/cvdfleet.XXXXXX)
chmod 755 "$TMP"
STARTED_PIDS=()
MADE_NS=()
cleanup() {
  local rc=$? p n
  trap - EXIT INT TERM
  for p in "${STARTED_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  # Anything still inside our namespaces was started by this script.
  for n in "${MADE_NS[@]}"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
  ((${#MADE_NS[@]} == 0)) || sleep 0.2
  for n in "${MADE_NS[@]}"; do ip netns del "$n" 2>/dev/null || log "warning: could not delete namespace $n"; done
  if [[ ${FLEET_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
cd "$REPO"
COMMIT=$(bench_commit "$REPO")
if [[ -n ${CVDMIRROR_BIN:-} ]]; then
  CVD_BIN=$CVDMIRROR_BIN
  COMMIT="not recorded (CVDMIRROR_BIN=$CVD_BIN)"
else
  log "building cvdmirror (release; can take 10+ minutes on a busy machine)"
  cargo build --release --quiet --bin cvdmirror
  CVD_BIN=$REPO/target/release/cvdmirror
fi
"$CVD_BIN" serve --help 2>&1 | grep -q -- '--public-url' || die "$CVD_BIN has no --fleet/--public-url (build it from a commit with the fleet)"
if [[ -n ${LOADGEN_BIN:-} ]]; then
  LOADGEN=$LOADGEN_BIN
else
  log "building cvdmirror-loadgen (release)"
  cargo build --release --quiet -p cvdmirror-loadgen
  LOADGEN=$REPO/target/release/cvdmirror-loadgen
fi

# ---------------------------------------------------------------- namespaces
nsn() { echo "cvdfl-$$-n$1"; }
# Foreground commands only: "ip netns exec NS cmd &" is used for background
# launches, so that $! is cmd itself.
nsc() { ip netns exec "$NSC" "$@"; }
nsi() { local i=$1; shift; ip netns exec "$(nsn "$i")" "$@"; }
node_ip() { echo "10.211.$1.1"; }
peer_ip() { echo "10.211.$1.2"; }

ip netns add "$NSC"
MADE_NS+=("$NSC")
nsc ip link set lo up
# AnyIP: every address of 10.212.0.0/16 is local here, so each client binds its own.
nsc ip route add local 10.212.0.0/16 dev lo
for i in "${NODES[@]}"; do
  ip netns add "$(nsn "$i")"
  MADE_NS+=("$(nsn "$i")")
  ip link add "vc$i" netns "$NSC" mtu 1500 type veth peer name "vn$i" netns "$(nsn "$i")" mtu 1500
  nsc ip addr add "$(peer_ip "$i")/24" dev "vc$i"
  nsc ip link set "vc$i" up
  nsi "$i" ip link set lo up
  nsi "$i" ip addr add "$(node_ip "$i")/24" dev "vn$i"
  nsi "$i" ip link set "vn$i" up
  nsi "$i" ip route add 10.212.0.0/16 via "$(peer_ip "$i")"
  nsi "$i" tc qdisc add dev "vn$i" root tbf rate "${LINK}mbit" burst 32kb latency 50ms
done
log "namespaces $NSC and $(nsn 1)..$(nsn 3): each node's uplink at ${LINK} Mbit/s (tbf burst 32kb latency 50ms, MTU 1500)"
tc_bytes() { # NODE -> bytes sent so far on the node's shaped uplink
  nsi "$1" tc -s qdisc show dev "vn$1" | awk '/Sent/ { for (i = 1; i <= NF; i++) if ($i == "Sent") b = $(i + 1) } END { printf "%.0f\n", b }'
}

# ---------------------------------------------------------------- redis
mkdir -p "$TMP/redis"
ip netns exec "$NSC" redis-server --port 6379 --bind "127.0.0.1 $(peer_ip 1) $(peer_ip 2) $(peer_ip 3)" \
  --save '' --appendonly no --protected-mode no --daemonize no --dir "$TMP/redis" --logfile "$TMP/redis/redis.log" &
STARTED_PIDS+=("$!")
for _ in $(seq 50); do nsc redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
nsc redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || die "redis-server did not start (see $TMP/redis/redis.log)"
log "redis-server $(redis-server --version | awk '{print $3}' | sed 's/v=//') on $(peer_ip 1), $(peer_ip 2), $(peer_ip 3), 127.0.0.1 in $NSC (no persistence)"

# ---------------------------------------------------------------- data
write_herd_data cvdfleet

# ---------------------------------------------------------------- nodes
write_conf() { # FILE LISTEN SHAPED(1|0)
  cat >"$1" <<EOF
# Written by bench/fleet.sh (as bench/incident.sh's cvdmirror setup).
listen = ["$2"]
root = "$MIRROR"
access_log = "off"
max_connections = 20000

[[site]]
name = "www"
hosts = ["$WWW_HOST"]
root = "$WWW"
EOF
  # Scenario C measures the request path, as bench/serve.sh's check: no
  # [shape] (its link_rate would cap 512-byte answers at ${CAP} Mbit/s,
  # about 20,000 a second) and no herd gate.
  [[ $3 == 1 ]] || return 0
  cat >>"$1" <<EOF

[shape]
link_rate = "${CAP}Mbit"

[limits.herd]
bulk_min_rate = "${MIN}Mbit"
retry_after_min = "${RA_MIN}s"
retry_after_max = "${RA_MAX}s"
EOF
}

declare -A PID
start_node() { # NAME NAMESPACE LISTEN_IP:PORT SHAPED(1|0) [FLEET ARGS...]
  local name=$1 ns=$2 listen=$3 shaped=$4 p
  shift 4
  mkdir -p "$TMP/$name"
  write_conf "$TMP/$name/cvdmirror.toml" "$listen" "$shaped"
  ip netns exec "$ns" env TOKIO_WORKER_THREADS=2 "$CVD_BIN" serve -c "$TMP/$name/cvdmirror.toml" \
    --admin-listen 127.0.0.1:9000 "$@" >"$TMP/$name/out.log" 2>"$TMP/$name/err.log" &
  p=$!
  STARTED_PIDS+=("$p")
  PID[$name]=$p
  for _ in $(seq 100); do
    kill -0 "$p" 2>/dev/null || break
    ip netns exec "$ns" curl -fsS -o /dev/null --max-time 1 "http://$listen/daily-27830.cdiff" 2>/dev/null && return 0
    sleep 0.1
  done
  tail -5 "$TMP/$name/err.log" >&2 || true
  die "$name did not start"
}

stop_node() {
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

start_fleet_node() { # I
  local i=$1
  start_node "n$i" "$(nsn "$i")" "$(node_ip "$i"):$PORT" 1 \
    --fleet "redis://$(peer_ip "$i"):6379/0" --node "n$i" --public-url "http://$(node_ip "$i"):$PORT"
}

# wait_fleet: until every node's /fleet.json lists three fresh nodes (<= 20 s).
wait_fleet() {
  local i n ok
  for _ in $(seq 100); do
    ok=1
    for i in "${NODES[@]}"; do
      n=$(nsi "$i" curl -fsS --max-time 1 http://127.0.0.1:9000/fleet.json 2>/dev/null | grep -o '"fresh":true' | wc -l || true)
      [[ $n == 3 ]] || ok=0
    done
    [[ $ok == 1 ]] && return 0
    sleep 0.2
  done
  nsi 1 curl -sS --max-time 1 http://127.0.0.1:9000/fleet.json >&2 || true
  die "the three nodes did not see each other within 20 s"
}

preflight() { # NAME NAMESPACE_FOR_CLIENT ADDR
  local got
  got=$(ip netns exec "$2" curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 \
    -H 'Range: bytes=0-511' -H "If-Modified-Since: $IMS_OLD" "http://$3/daily.cvd" 2>&1 || true)
  [[ $got == "206 512" ]] || echo "$1: preflight header check answered '$got', expected '206 512'" >>"$TMP/misbehaviour"
  got=$(ip netns exec "$2" curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 -H "Host: $WWW_HOST" "http://$3/index.html" 2>&1 || true)
  [[ $got == "200 8192" ]] || echo "$1: preflight website answered '$got', expected '200 8192'" >>"$TMP/misbehaviour"
  got=$(ip netns exec "$2" curl -sS -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' --max-time 60 "http://$3/daily.cvd" 2>&1 || true)
  log "preflight $1: one download alone -> $got (code, bytes, bytes/s)"
  [[ ${got% *} == "200 $DAILY_BYTES" ]] || echo "$1: preflight full download answered '${got% *}', expected '200 $DAILY_BYTES'" >>"$TMP/misbehaviour"
}

# ---------------------------------------------------------------- measuring
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)




# run_herd SCENARIO NODE_LIST ADDRS SPLIT CLIENTS: idle probes, then probes
# and the herd; writes $TMP/SCENARIO.* and appends to $TMP/herds.tsv and
# $TMP/probes.tsv.
run_herd() {
  local sc=$1 nodes=$2 addrs=$3 split=$4 clients=$5 i steal_pid t_idle0 t_idle1 herd lo hi pids=() b0 busy
  local -A tc0
  log "$sc: idle probe baseline on node(s) $nodes, ${IDLE}s"
  "$LOADGEN" steal --out "$TMP/$sc.steal.tsv" --duration-secs $((IDLE + DEADLINE + 120)) >/dev/null &
  steal_pid=$!
  STARTED_PIDS+=("$steal_pid")
  t_idle0=$(date +%s%3N)
  for i in $nodes; do
    ip netns exec "$NSC" "$LOADGEN" probe --addr "$(node_ip "$i"):$PORT" --host "$WWW_HOST" --path /index.html \
      --duration-secs "$IDLE" --out "$TMP/$sc.idle.n$i.tsv" >/dev/null &
    pids+=("$!")
    STARTED_PIDS+=("$!")
  done
  wait "${pids[@]}"
  t_idle1=$(date +%s%3N)
  pids=()
  for i in $nodes; do
    ip netns exec "$NSC" "$LOADGEN" probe --addr "$(node_ip "$i"):$PORT" --host "$WWW_HOST" --path /index.html \
      --duration-secs $((DEADLINE + 30)) --out "$TMP/$sc.busy.n$i.tsv" >/dev/null &
    pids+=("$!")
    STARTED_PIDS+=("$!")
  done
  sleep 1
  for i in $nodes; do tc0[$i]=$(tc_bytes "$i"); done
  b0=$(cpu_total_busy)
  log "$sc: herd of $clients clients arriving within ${ARRIVE}s over node(s) $nodes (split $split), ${DAILY_MIB} MiB each (deadline ${DEADLINE}s)"
  timeout $((DEADLINE + 60)) ip netns exec "$NSC" "$LOADGEN" herd --addrs "$addrs" --split "$split" --host mirror.bench.test \
    --clients "$clients" --arrive-secs "$ARRIVE" --size "$DAILY_BYTES" --cvd /daily.cvd \
    --cdiff /daily-27829.cdiff --ims "$IMS_OLD" --seed "$SEED" --deadline-secs "$DEADLINE" \
    --stall-secs "$STALL" --retry-secs 5 --attempts 3 --source-base 10.212.0.0 --out "$TMP/$sc" >"$TMP/$sc.herd.txt" 2>"$TMP/$sc.herd.err" ||
    { cat "$TMP/$sc.herd.err" >&2; die "herd failed ($sc)"; }
  herd=$(grep '^RESULT' "$TMP/$sc.herd.txt")
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  kill -TERM "$steal_pid" 2>/dev/null || true
  wait "$steal_pid" 2>/dev/null || true
  local secs
  secs=$(awk -v a="$(kv start_unix_ms "$herd")" -v b="$(kv end_unix_ms "$herd")" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
  busy=$(awk -v b="$(($(cpu_total_busy) - b0))" -v hz="$HZ" -v n="$NCPU" -v d="$secs" 'BEGIN { printf "%.0f", b / (hz * n * d) * 100 }')
  # The probes' busy window: the first whole-download request until the
  # last client held the file (or the herd's end), as incident.sh.
  lo=$(($(kv start_unix_ms "$herd") + $(kv first_full_ms "$herd")))
  if [[ $(kv all_done_s "$herd") == never ]]; then hi=$(kv end_unix_ms "$herd"); else hi=$(($(kv start_unix_ms "$herd") + $(kv last_done_ms "$herd"))); fi
  log "$sc: ${herd#RESULT }"
  printf '%s\t%s\t%s\t%s\t%s\n' "$sc" "$clients" "$herd" "$(steal_share "$TMP/$sc.steal.tsv" "$t_idle0" "$t_idle1")/$(steal_share "$TMP/$sc.steal.tsv" "$lo" "$hi")" "$busy" >>"$TMP/herds.tsv"
  for i in $nodes; do
    local idle bz cidle cbz link
    idle=$(probe_stats "$TMP/$sc.idle.n$i.tsv" 0 99999999999999)
    bz=$(probe_stats "$TMP/$sc.busy.n$i.tsv" "$lo" "$hi")
    cidle=$(probe_stats_calm "$TMP/$sc.idle.n$i.tsv" "$TMP/$sc.steal.tsv" 0 99999999999999)
    cbz=$(probe_stats_calm "$TMP/$sc.busy.n$i.tsv" "$TMP/$sc.steal.tsv" "$lo" "$hi")
    link=$(awk -v b="$(($(tc_bytes "$i") - ${tc0[$i]}))" -v s="$secs" 'BEGIN { printf "%.1f", b * 8 / s / 1e6 }')
    log "$sc node $i: probe idle (n p50 p99 failures) $idle, during the herd $bz; without stolen CPU: $cidle / $cbz; uplink ${link} Mbit/s over the herd"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$i" "$idle" "$bz" "$cidle" "$cbz" "$link" >>"$TMP/probes.tsv"
  done
  [[ $(kv completed "$herd") == "$clients" ]] ||
    echo "$sc: only $(kv completed "$herd") of $clients clients got the whole file within ${DEADLINE}s ($(kv gave_up "$herd") gave up)" >>"$TMP/misbehaviour"
}

: >"$TMP/herds.tsv"
: >"$TMP/probes.tsv"
T_START=$(date +%s)

# ---------------------------------------------------------------- A: one node
log "=== A: one node, $CLIENTS clients"
start_node a "$(nsn 1)" "$(node_ip 1):$PORT" 1
preflight a "$NSC" "$(node_ip 1):$PORT"
sleep 2
run_herd A "1" "$(node_ip 1):$PORT" 1 "$CLIENTS"
stop_node a
sleep 2

# ---------------------------------------------------------------- B: the fleet
log "=== B: three nodes through Redis, $FLEET_CLIENTS_N clients split $SPLIT"
for i in "${NODES[@]}"; do start_fleet_node "$i"; done
wait_fleet
log "B: every node sees three fresh nodes"
for i in "${NODES[@]}"; do preflight "n$i" "$NSC" "$(node_ip "$i"):$PORT"; done
sleep 3
run_herd B "1 2 3" "$(node_ip 1):$PORT,$(node_ip 2):$PORT,$(node_ip 3):$PORT" "$SPLIT" "$FLEET_CLIENTS_N"
for i in "${NODES[@]}"; do stop_node "n$i"; done
sleep 1

# ---------------------------------------------------------------- C: cost of --fleet
log "=== C: header checks against one node with --fleet and without (${CHECK_REPS} x ${CHECK_SECS}s each, interleaved)"
start_node c-fleet "$NSC" 127.0.0.1:8101 0 --fleet redis://127.0.0.1:6379/1 --node c-fleet --public-url http://127.0.0.1:8101
# The same node without --fleet (its own ports in the same namespace).
mkdir -p "$TMP/c-plain"
write_conf "$TMP/c-plain/cvdmirror.toml" 127.0.0.1:8102 0
ip netns exec "$NSC" env TOKIO_WORKER_THREADS=2 "$CVD_BIN" serve -c "$TMP/c-plain/cvdmirror.toml" \
  --admin-listen 127.0.0.1:9001 >"$TMP/c-plain/out.log" 2>"$TMP/c-plain/err.log" &
PID[c-plain]=$!
STARTED_PIDS+=("$!")
for _ in $(seq 100); do nsc curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:8102/daily-27830.cdiff 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 50); do nsc curl -fsS --max-time 1 http://127.0.0.1:9000/fleet.json 2>/dev/null | grep -q '"fresh":true' && break; sleep 0.2; done
nsc curl -fsS --max-time 1 http://127.0.0.1:9000/fleet.json 2>/dev/null | grep -q '"redis_ok":true' ||
  echo "c-fleet: /fleet.json does not show redis_ok before the check runs" >>"$TMP/misbehaviour"
preflight c-fleet "$NSC" 127.0.0.1:8101
preflight c-plain "$NSC" 127.0.0.1:8102
write_wrk_get "$TMP/check-close.lua" 'Range: bytes=0-511' 'Connection: close'
write_wrk_get "$TMP/check-ka.lua" 'Range: bytes=0-511'
: >"$TMP/check.tsv"
wrk_once() { # PATTERN PORT -> req/s (non-2xx/3xx noted)
  local out
  out=$(nsc wrk -t 2 -c "$CHECK_CONNS" -d "${CHECK_SECS}s" -s "$TMP/check-$1.lua" "http://127.0.0.1:$2/daily.cvd" 2>&1) || true
  grep -q 'Non-2xx' <<<"$out" && echo "C $1 port $2: $(grep 'Non-2xx' <<<"$out" | tr -s ' ')" >>"$TMP/misbehaviour"
  awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}
for pattern in close ka; do
  for rep in $(seq "$CHECK_REPS"); do
    if ((rep % 2 == 1)); then order="fleet plain"; else order="plain fleet"; fi
    for who in $order; do
      if [[ $who == fleet ]]; then port=8101; else port=8102; fi
      r=$(wrk_once "$pattern" "$port")
      log "C $pattern rep $rep $who: ${r:-?} req/s"
      printf '%s\t%s\t%s\n' "$pattern" "$who" "${r:-0}" >>"$TMP/check.tsv"
      sleep 1
    done
  done
done
stop_node c-fleet
stop_node c-plain
T_RUN=$(($(date +%s) - T_START))

# ---------------------------------------------------------------- report
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
check_median() { awk -F'\t' -v p="$1" -v w="$2" '$1 == p && $2 == w { print $3 }' "$TMP/check.tsv" | median; }
herd_of() { awk -F'\t' -v s="$1" '$1 == s { print $3 }' "$TMP/herds.tsv"; }
verdict() { # VALUE OP GOAL -> met / NOT met
  awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { if (v == "-" || v == "fail") { print "NOT met"; exit } ok = (op == ">=") ? (v + 0 >= g) : (v + 0 <= g); print ok ? "met" : "NOT met" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "fail" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

HA=$(herd_of A)
HB=$(herd_of B)
TA=$(kv busy_mean_mbit "$HA")
TB=$(kv busy_mean_mbit "$HB")
R_TPUT=$(ratio "$TB" "$(awk -v a="$TA" 'BEGIN { print 3 * a }')")
{
  echo "## Fleet — $(date -u '+%Y-%m-%d %H:%M UTC')$([[ $QUICK == 1 ]] && echo ' (quick run)')"
  echo
  echo "Command: \`$([[ $QUICK == 1 ]] && echo 'FLEET_QUICK=1 ')bench/fleet.sh\` — each node in its own network namespace behind its own ${LINK} Mbit/s uplink (veth + tbf), \`--link-rate ${CAP}Mbit\`, herd gate \`--bulk-min-rate ${MIN}Mbit\`, Retry-After ${RA_MIN}–${RA_MAX} s (as bench/incident.sh's cvdmirror setup), ${DAILY_MIB} MiB daily.cvd. A: one node, $CLIENTS freshclam-like clients arriving within ${ARRIVE} s. B: three nodes joined through one redis-server (\`--fleet\`, default timings, redirect above 90 % of the link), $FLEET_CLIENTS_N clients arriving within ${ARRIVE} s, assigned to the nodes ${SPLIT//,/ \/ } (weighted round robin; uneven on purpose, so only redirects can balance it), every 302 followed. Website probe: one 8 KiB page every 100 ms per node over the node's link. C: wrk, ${CHECK_CONNS} connections, \`GET /daily.cvd\` with \`Range: bytes=0-511\`, ${CHECK_REPS} × ${CHECK_SECS} s per server and pattern, interleaved, on unshaped loopback, both nodes without \`[shape]\` and gate (as bench/serve.sh). Seed $SEED; whole run ${T_RUN} s."
  echo
  echo "Machine: $NCPU cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r); cvdmirror $COMMIT ($(rustc --version 2>/dev/null | awk '{print $1, $2}')); redis $(redis-server --version | awk '{print $3}' | sed 's/v=//')."
  echo
  echo '| measure | result | goal | |'
  echo '|---|---|---|---|'
  echo "| aggregate CVD throughput, fleet / 3 × one node | $TB / (3 × $TA) Mbit/s = **$R_TPUT** | ≥ 0.9 | $(verdict "$R_TPUT" ">=" 0.9) |"
  echo "| every client holds the file (fleet) | $(kv completed "$HB") / $FLEET_CLIENTS_N, all after $(kv all_done_s "$HB") s (one node, $CLIENTS clients: $(kv completed "$HA") / $CLIENTS after $(kv all_done_s "$HA") s) | all | $([[ $(kv completed "$HB") == "$FLEET_CLIENTS_N" ]] && echo met || echo 'NOT met') |"
  while IFS=$'\t' read -r sc i idle bz cidle cbz _; do
    [[ $sc == B ]] || continue
    read -r _ _ ip99 _ <<<"$idle"
    read -r _ _ bp99 bf <<<"$bz"
    read -r _ _ cip99 _ <<<"$cidle"
    read -r cbn _ cbp99 _ <<<"$cbz"
    r=$(ratio "$bp99" "$ip99")
    echo "| website probe p99 on node $i, herd / idle | $bp99 / $ip99 ms = **${r}×** ($bf failures; without stolen CPU: $cbp99 / $cip99 ms = $(ratio "$cbp99" "$cip99")×, n=$cbn) | ≤ 2× | $(verdict "$r" "<=" 2) |"
  done <"$TMP/probes.tsv"
  for pattern in close ka; do
    f=$(check_median "$pattern" fleet)
    p=$(check_median "$pattern" plain)
    r=$(ratio "$f" "$p")
    label=$([[ $pattern == close ]] && echo 'Connection: close (freshclam)' || echo 'keep-alive')
    echo "| header check, $label: req/s with \`--fleet\` / without | $f / $p = **$r** (medians of $CHECK_REPS) | ≥ 0.9 | $(verdict "$r" ">=" 0.9) |"
  done
  echo
  echo '| scenario | clients | completed | all done after | CVD throughput over busy period, Mbit/s | peak 1 s Mbit/s | 302s followed | 429s | requests | per node: clients / completed there / redirected away; uplink Mbit/s | CPU stolen idle / herd | machine CPU busy during herd |'
  echo '|---|---|---|---|---|---|---|---|---|---|---|---|'
  while IFS=$'\t' read -r sc clients herd steal busy; do
    per=""
    for i in "${NODES[@]}"; do
      link=$(awk -F'\t' -v s="$sc" -v n="$i" '$1 == s && $2 == n { print $7 }' "$TMP/probes.tsv")
      [[ -n $link ]] || continue
      if [[ $sc == B ]]; then
        per+="n$i: $(kv "server$((i - 1))_clients" "$herd") / $(kv "server$((i - 1))_completed" "$herd") / $(kv "server$((i - 1))_redirects" "$herd"); ${link}<br>"
      else
        per+="n$i: $clients / $(kv completed "$herd") / 0; ${link}<br>"
      fi
    done
    echo "| $sc | $clients | $(kv completed "$herd") ($(kv gave_up "$herd") gave up) | $(kv all_done_s "$herd") s | $(kv busy_mean_mbit "$herd") | $(kv peak_1s_mbit "$herd") | $(kv redirects "$herd") | $(kv s429 "$herd") | $(kv requests "$herd") | ${per%<br>} | ${steal/\//% / }% | ${busy}% |"
  done <"$TMP/herds.tsv"
  echo
  echo "Header checks (req/s, every repetition, in the order run):"
  echo
  echo '```'
  awk -F'\t' '{ printf "%s %s %s\n", $1, $2, $3 }' "$TMP/check.tsv" | sed 's/^ka /keep-alive /'
  echo '```'
  echo
  echo 'Herd RESULT lines:'
  echo
  echo '```'
  awk -F'\t' '{ print $1 ": " $3 }' "$TMP/herds.tsv" | sed 's/RESULT mode=herd //'
  echo '```'
  if [[ -s $TMP/misbehaviour ]]; then
    echo
    echo "Observed misbehaviour:"
    echo
    sort -u "$TMP/misbehaviour" | sed 's/^/- /'
  fi
} >"$TMP/report.md"
echo
cat "$TMP/report.md"
if [[ -n ${FLEET_OUT:-} ]]; then cp "$TMP/report.md" "$FLEET_OUT"; log "report written to $FLEET_OUT"; fi
if [[ $RECORD == 1 ]]; then
  # Newest first, below the file's own header (its first "## " section).
  results="$REPO/bench/results/fleet.md"
  [[ -f $results ]] || printf '# Fleet: every recorded run\n\nEvery run of bench/fleet.sh, newest first.\n' >"$results"
  awk -v report="$TMP/report.md" '
    !done && /^## / { while ((getline line < report) > 0) print line; print ""; done = 1 }
    { print }
    END { if (!done) { print ""; while ((getline line < report) > 0) print line } }
  ' "$results" >"$TMP/results.md" && cp "$TMP/results.md" "$results"
  log "recorded at the top of $results; copy the tables into BENCHMARKS.md"
fi
