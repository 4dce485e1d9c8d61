#!/usr/bin/env bash
# bench/sync.sh — cvdmirror sync vs its pre-`.sign`-verification self and
# Debian's cvdupdate, side by side in one run.
#
# Usage: bench/sync.sh [fresh|incremental]...   (no argument: both)
#
# One loopback upstream (nginx, static files, access log) and one DNS TXT
# answer serve a signed `daily` history made with cvdmirror's test keys:
# CVD N (~60 MB) and N-1, cdiffs N-100..N (~30 KB each), and, as upstream
# since ClamAV 1.5, each file's detached `.sign` (`daily-N.cvd.sign`,
# `daily-N.cdiff.sign`) from a throw-away PKI made with the fixtures. Every
# tool mirrors `daily` only. The tools:
#   cvdmirror       this checkout, `--sign-root` = the fixtures' root: fetches
#                   and verifies every `.sign` (PKCS#7, OpenSSL) and publishes it
#   cvdmirror-base  cvdmirror at BENCH_BASELINE_REV (e0390c2, the last commit
#                   before `.sign` verification: it fetches the `.sign` files
#                   and publishes them unverified), built once into a cache
#   cvdupdate       Debian's clamav-cvdupdate (1.1.1 fetches no `.sign`)
# Scenarios:
#   fresh        empty mirror directory, upstream at N: whole CVD + cdiffs
#                (cvdmirror with [sync] backfill = 100: 100 cdiffs; cvdupdate
#                1.1.1 fetches only the newest cdiff on a fresh mirror, so an
#                extra row runs cvdmirror with backfill = 1: the same files)
#   incremental  mirror synced at N-1 (untimed), upstream advances to N
#                (CVD N + cdiff N): the daily case, timed
# Each run: wall time, peak RSS and CPU (GNU time), requests and bytes from
# the upstream access log, the served files (`.sign` included) checked byte
# for byte against upstream, and the share of the machine's CPU other
# processes used. Ratios: cvdmirror / cvdmirror-base and x / cvdupdate.
#
# Knobs (environment): BENCH_REPS (3), BENCH_VERSION (27830), BENCH_CVD_BYTES
# (60000000), BENCH_CDIFFS (100), BENCH_CDIFF_BYTES (30000), BENCH_FIXTURES
# (fixture cache, /tmp/cvdmirror-syncbench-fixtures), CVDMIRROR_BIN,
# SYNCBENCH_BIN and BASELINE_BIN (skip the builds), BENCH_BASELINE_REV
# (e0390c2), BENCH_BASELINE_CACHE (/tmp/cvdmirror-syncbench-baseline: the
# baseline's source and target dir, per commit), BENCH_OUT (also write the
# report there), BENCH_WAIT_QUIET (s to wait for < 15% CPU before each run,
# 10), BENCH_KEEP_TMP=1.
#
# Needs root (cvdupdate only asks DNS on 127.0.0.1:53). Talks only to
# loopback; every loop is bounded; cleans up on exit or Ctrl-C.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${BENCH_REPS:-3}
VERSION=${BENCH_VERSION:-27830}
CVD_BYTES=${BENCH_CVD_BYTES:-60000000}
CDIFFS=${BENCH_CDIFFS:-100}
CDIFF_BYTES=${BENCH_CDIFF_BYTES:-30000}
FIXTURE_CACHE=${BENCH_FIXTURES:-/tmp/cvdmirror-syncbench-fixtures}
# Bump when the fixture set changes so that old caches are regenerated
# (2: a `.sign` per CVD and cdiff, and sign-root.pem).
FIXTURE_FORMAT=2
BASELINE_REV=${BENCH_BASELINE_REV:-e0390c2}
BASELINE_CACHE=${BENCH_BASELINE_CACHE:-/tmp/cvdmirror-syncbench-baseline}
DNS_NAME=current.cvd.clamav.net
DB=daily

BENCH_NAME=sync-bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_SCENARIOS=(fresh incremental)
SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=("${ALL_SCENARIOS[@]}")
for s in "${SCENARIOS[@]}"; do
  case $s in fresh | incremental) ;; -h | --help) sed -n '2,42p' "$0"; exit 0 ;; *) die "unknown scenario '$s' (fresh|incremental)" ;; esac
done
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 && $REPS -le 9 ]] || die "BENCH_REPS must be 1..9"
[[ $VERSION =~ ^[0-9]+$ && $VERSION -gt $((CDIFFS + 2)) ]] || die "BENCH_VERSION must be a number > BENCH_CDIFFS + 2"
[[ $CDIFFS =~ ^[0-9]+$ && $CDIFFS -ge 2 && $CDIFFS -le 1000 ]] || die "BENCH_CDIFFS must be 2..1000"
[[ $CVD_BYTES =~ ^[0-9]+$ && $CVD_BYTES -le 1000000000 ]] || die "BENCH_CVD_BYTES must be <= 1e9"
[[ $CDIFF_BYTES =~ ^[0-9]+$ && $CDIFF_BYTES -le 200000 ]] || die "BENCH_CDIFF_BYTES must be <= 200000"
[[ $(id -u) == 0 ]] || die "run as root: cvdupdate asks DNS only on port 53"

# ---------------------------------------------------------------- tools
need cvdupdate clamav-cvdupdate
need nginx nginx
need curl curl
need ss iproute2
[[ -x /usr/bin/time ]] || need /usr/bin/time time
command -v cargo >/dev/null 2>&1 || die "cargo is required"
# cvdupdate is Debian's Python package: run it, and edit its state, with the
# system interpreter whatever python3 comes first in PATH.
PY=/usr/bin/python3

# ---------------------------------------------------------------- cleanup
bench_tmp cvdsyncbench
chmod 755 "$TMP"

# ---------------------------------------------------------------- build
cd "$REPO"
COMMIT=$(bench_commit "$REPO")
# Builds run at low priority: the machine is often shared, and they are untimed.
if [[ -n ${CVDMIRROR_BIN:-} ]]; then
  CVD_BIN=$CVDMIRROR_BIN
else
  log "building cvdmirror (release; minutes on a busy machine)"
  nice -n 10 cargo build --release --quiet --bin cvdmirror
  CVD_BIN=$REPO/target/release/cvdmirror
fi
if [[ -n ${SYNCBENCH_BIN:-} ]]; then
  HELPER=$SYNCBENCH_BIN
else
  log "building cvdmirror-syncbench (bench/loadgen, release)"
  nice -n 10 cargo build --release --quiet -p cvdmirror-loadgen --bin cvdmirror-syncbench
  HELPER=$REPO/target/release/cvdmirror-syncbench
fi
# The baseline: cvdmirror at BASELINE_REV, from `git archive` (no worktree,
# nothing written to the repository), built once per commit into the cache
# with its own target dir and its own Cargo.lock.
BASELINE_COMMIT=$(git -C "$REPO" rev-parse --short=12 "$BASELINE_REV^{commit}" 2>/dev/null) ||
  die "BENCH_BASELINE_REV=$BASELINE_REV is not a commit of $REPO"
if [[ -n ${BASELINE_BIN:-} ]]; then
  BASE_BIN=$BASELINE_BIN
else
  bdir=$BASELINE_CACHE/$BASELINE_COMMIT
  BASE_BIN=$bdir/target/release/cvdmirror
  if [[ -f $bdir/.complete && -x $BASE_BIN ]]; then
    log "baseline: cvdmirror $BASELINE_COMMIT cached in $bdir"
  else
    log "baseline: building cvdmirror $BASELINE_COMMIT into $bdir (release; minutes on a busy machine)"
    rm -rf "$bdir/src" "$bdir/.complete"
    mkdir -p "$bdir/src"
    git -C "$REPO" archive "$BASELINE_COMMIT" | tar -x -C "$bdir/src" || die "cannot extract $BASELINE_COMMIT"
    (cd "$bdir/src" && CARGO_TARGET_DIR=$bdir/target nice -n 10 cargo build --release --locked --quiet --bin cvdmirror) ||
      die "building the baseline $BASELINE_COMMIT failed"
    touch "$bdir/.complete"
  fi
fi
# Measure copies: other builds in a shared target dir may replace the
# originals while the bench runs.
[[ -z ${CVDMIRROR_BIN:-} ]] || COMMIT="binary $CVDMIRROR_BIN (checkout at $COMMIT)"
mkdir -p "$TMP/bin"
cp "$CVD_BIN" "$TMP/bin/cvdmirror" && cp "$BASE_BIN" "$TMP/bin/cvdmirror-base" && cp "$HELPER" "$TMP/bin/cvdmirror-syncbench" ||
  die "cannot copy the binaries to $TMP/bin"
CVD_BIN=$TMP/bin/cvdmirror BASE_BIN=$TMP/bin/cvdmirror-base HELPER=$TMP/bin/cvdmirror-syncbench
"$CVD_BIN" sync --help 2>&1 | grep -q -- '--sign-root' || die "$CVD_BIN has no 'sync --sign-root'"
"$BASE_BIN" sync --help 2>&1 | grep -q -- '--trusted-key' || die "$BASE_BIN has no 'sync --trusted-key'"
CVDUPDATE_VERSION=$(dpkg-query -W -f '${Version}' clamav-cvdupdate 2>/dev/null || echo unknown)

# ---------------------------------------------------------------- fixtures
OLDEST=$((VERSION - CDIFFS))
FIX=$FIXTURE_CACHE/f$FIXTURE_FORMAT-v$VERSION-s$CVD_BYTES-c$CDIFFS-b$CDIFF_BYTES
if [[ -f $FIX/.complete ]]; then
  log "fixtures: cached in $FIX"
else
  log "fixtures: generating $DB $((VERSION - 1)) and $VERSION (~$CVD_BYTES bytes) and cdiffs $OLDEST..$VERSION into $FIX"
  rm -rf "$FIX"
  mkdir -p "$FIX"
  timeout 600 "$HELPER" fixtures --out "$FIX" --db "$DB" --version "$VERSION" --size "$CVD_BYTES" \
    --cdiffs $((CDIFFS + 1)) --cdiff-bytes "$CDIFF_BYTES" || die "fixture generation failed"
  touch "$FIX/.complete"
fi
chmod 755 "$FIXTURE_CACHE" "$FIX"
chmod 644 "$FIX"/*
TRUSTED=()
while read -r k; do [[ -n $k ]] && TRUSTED+=(--trusted-key "$k"); done <"$FIX/trusted-keys"
[[ ${#TRUSTED[@]} -eq 6 ]] || die "expected 3 test keys in $FIX/trusted-keys"
SIGN_ROOT=$FIX/sign-root.pem
[[ -s $SIGN_ROOT ]] || die "no $SIGN_ROOT: remove $FIX and run again"
CVD_SIZE=$(stat -c %s "$FIX/$DB-$VERSION.cvd")
CDIFF_MEAN=$(cat "$FIX/$DB"-*.cdiff | wc -c | awk -v n=$((CDIFFS + 1)) '{ printf "%.0f", $1 / n }')
SIGN_MEAN=$(cat "$FIX/$DB"-*.sign | wc -c | awk -v n=$((CDIFFS + 3)) '{ printf "%.0f", $1 / n }')

# ---------------------------------------------------------------- upstream
UP=$TMP/up
mkdir -p "$UP"
chmod 755 "$UP"
place() { # place SRC DEST: hard link from the cache, copy across file systems
  ln -f "$1" "$2" 2>/dev/null || cp -f "$1" "$2"
}
RECORD=$TMP/dns-record
advertise() { # advertise VERSION: the TXT record both tools read (daily = field 2)
  printf '0.103.1:62:%s:%s:0:63:0:334\n' "$1" "$(date +%s)" >"$RECORD.new"
  mv -f "$RECORD.new" "$RECORD"
}
upstream_at() { # upstream_at VERSION: CVD VERSION, cdiffs OLDEST..VERSION, each with its .sign; DNS says VERSION
  local v
  find "$UP" -mindepth 1 -delete
  place "$FIX/$DB-$1.cvd" "$UP/$DB.cvd"
  place "$FIX/$DB-$1.cvd.sign" "$UP/$DB-$1.cvd.sign"
  for ((v = OLDEST; v <= $1; v++)); do
    place "$FIX/$DB-$v.cdiff" "$UP/$DB-$v.cdiff"
    place "$FIX/$DB-$v.cdiff.sign" "$UP/$DB-$v.cdiff.sign"
  done
  advertise "$1"
}
upstream_at "$VERSION"

free_port() { # free_port START -> first free TCP+UDP port from START (replaces lib.sh's, TCP only: the beacon listens on UDP too)
  local p
  for ((p = $1; p < $1 + 200; p++)); do
    [[ -z $(ss -Htln "( sport = :$p )")$(ss -Hlun "( sport = :$p )") ]] && { echo "$p"; return 0; }
  done
  die "no free port near $1"
}
NGINX_PORT=$(free_port 18580)
UPSTREAM=http://127.0.0.1:$NGINX_PORT
ACCESS=$TMP/nginx/logs/access.log
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
cat >"$TMP/nginx/nginx.conf" <<EOF
# Written by bench/sync.sh: a static upstream, like the CDN, for both tools.
user www-data;
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  types { application/octet-stream cvd cld cdiff sign; }
  default_type application/octet-stream;
  sendfile on;
  log_format bench '\$status \$body_bytes_sent "\$request" "\$http_user_agent"';
  access_log $ACCESS bench;
  client_body_temp_path $TMP/nginx/tmp/body;
  proxy_temp_path $TMP/nginx/tmp/proxy;
  fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
  uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
  scgi_temp_path $TMP/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $UP;
    location / { }
  }
}
EOF
nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" || die "nginx config is invalid"
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" &
NGINX_PID=$!
STARTED_PIDS+=("$NGINX_PID")
for _ in $(seq 100); do
  curl -fsS -o /dev/null --max-time 1 -r 0-511 "$UPSTREAM/$DB.cvd" 2>/dev/null && break
  kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited"
  sleep 0.1
done
curl -fsS -o /dev/null --max-time 2 -r 0-511 "$UPSTREAM/$DB.cvd" || die "nginx does not answer on $NGINX_PORT"

# DNS: one helper process per tool run, started before and stopped after it
# (untimed). cvdupdate's must be on 127.0.0.1:53, which the project's sync
# tests also use: the port is held only while cvdupdate runs.
DNS_PID=
CVD_DNS_PORT=$(free_port 18653)
dns_start() { # dns_start PORT
  local out=$TMP/dns-$1.out i
  for ((i = 0; i < 1200; i++)); do # up to 120 s for someone else's port-53 user to finish
    [[ -z $(ss -Hlun "( sport = :$1 )") ]] && break
    ((i % 100 == 0)) && log "UDP port $1 busy; waiting"
    sleep 0.1
  done
  "$HELPER" dns --listen "127.0.0.1:$1" --name "$DNS_NAME" --record-file "$RECORD" --max-secs 3600 >"$out" 2>&1 &
  DNS_PID=$!
  STARTED_PIDS+=("$DNS_PID")
  for _ in $(seq 100); do
    grep -q '^listening on' "$out" 2>/dev/null && return 0
    kill -0 "$DNS_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$out" >&2
  die "DNS helper did not start on 127.0.0.1:$1"
}
dns_stop() {
  [[ -n $DNS_PID ]] || return 0
  kill -TERM "$DNS_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$DNS_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$DNS_PID" 2>/dev/null || true
  wait "$DNS_PID" 2>/dev/null || true
  DNS_PID=
}

# ---------------------------------------------------------------- the tools
# A workspace per run: $W/root (served), $W/cfg (cvdmirror config or
# cvdupdate's config/state/logs, outside the served directory).
setup_tool() { # setup_tool TOOL W
  local tool=$1 w=$2
  rm -rf "$w"
  mkdir -p "$w/root" "$w/cfg"
  case $tool in
    cvdmirror | cvdmirror-b1 | cvdmirror-base)
      local backfill=$CDIFFS
      [[ $tool == cvdmirror-b1 ]] && backfill=1
      printf '[sync]\nbackfill = %s\n' "$backfill" >"$w/cfg/cvdmirror.toml"
      ;;
    cvdupdate)
      HOME=$w/cfg "$PY" /usr/bin/cvdupdate config set --config "$w/cfg/config.json" \
        --dbdir "$w/root" --logdir "$w/cfg/logs" --nameserver 127.0.0.1 >"$w/cfg/setup.log" 2>&1 ||
        { cat "$w/cfg/setup.log" >&2; die "cvdupdate config set failed"; }
      # Only daily.cvd, from the loopback upstream; its version is DNS field 2.
      "$PY" - "$w/cfg/state.json" "$UPSTREAM/$DB.cvd" <<'PYEOF' || die "cannot edit cvdupdate's state.json"
import json, sys
path, url = sys.argv[1], sys.argv[2]
with open(path) as f:
    state = json.load(f)
state["dbs"] = {"daily.cvd": {"url": url, "retry after": 0, "last modified": 0,
                              "last checked": 0, "DNS field": 2, "local version": 0, "CDIFFs": []}}
with open(path, "w") as f:
    json.dump(state, f, indent=4)
PYEOF
      ;;
  esac
}

tool_cmd() { # tool_cmd TOOL W -> sets CMD (array)
  local tool=$1 w=$2
  case $tool in
    cvdmirror | cvdmirror-b1)
      CMD=(env -u CVDMIRROR_CONFIG -u CVDMIRROR_SIGN_ROOTS -u CVDMIRROR_SIGNATURES RUST_LOG=info NO_COLOR=1
        "$CVD_BIN" sync --root "$w/root" --config "$w/cfg/cvdmirror.toml"
        --upstream "$UPSTREAM" --dns-name "$DNS_NAME" --nameserver "127.0.0.1:$CVD_DNS_PORT"
        --db "$DB" "${TRUSTED[@]}" --sign-root "$SIGN_ROOT")
      ;;
    cvdmirror-base) # no --sign-root: this version checks only that a .sign begins with #clamsign-1.0
      CMD=(env -u CVDMIRROR_CONFIG RUST_LOG=info NO_COLOR=1 "$BASE_BIN" sync --root "$w/root" --config "$w/cfg/cvdmirror.toml"
        --upstream "$UPSTREAM" --dns-name "$DNS_NAME" --nameserver "127.0.0.1:$CVD_DNS_PORT"
        --db "$DB" "${TRUSTED[@]}")
      ;;
    cvdupdate)
      # As from cron: no bytecode/buffering overrides that this workplace sets.
      CMD=(env -u CVDUPDATE_NAMESERVER -u PYTHONDONTWRITEBYTECODE -u PYTHONUNBUFFERED HOME="$w/cfg"
        "$PY" /usr/bin/cvdupdate update "$DB.cvd" --config "$w/cfg/config.json")
      ;;
  esac
}

dns_port_of() { if [[ $1 == cvdupdate ]]; then echo 53; else echo "$CVD_DNS_PORT"; fi; }

HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
cpu_total_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
cpu_total_all() { awk '/^cpu / { s = 0; for (i = 2; i <= NF; i++) s += $i; print s; exit }' /proc/stat; }
cpu_of_pids() { # cpu_of_pids PID.. -> utime+stime ticks
  local p t=0 f
  for p in "$@"; do
    f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + $(awk '{ print $12 + $13 }' <<<"$f")))
  done
  echo "$t"
}
nginx_pids() { echo "$NGINX_PID" "$(pgrep -P "$NGINX_PID" | tr '\n' ' ')"; }

wait_quiet() { # bounded: up to BENCH_WAIT_QUIET s for the CPU to be < 15% busy
  local limit=${BENCH_WAIT_QUIET:-10} waited=0 b0 t0 b1 t1
  while ((waited < limit)); do
    b0=$(cpu_total_busy) t0=$(cpu_total_all)
    sleep 1
    b1=$(cpu_total_busy) t1=$(cpu_total_all)
    (((b1 - b0) * 100 < 15 * (t1 - t0))) && return 0
    waited=$((waited + 1))
  done
  ((limit == 0)) || log "machine still busy after ${limit}s of waiting; running anyway"
}

# run_tool TOOL W LABEL: one untimed or timed pass; sets RUN_* variables.
run_tool() {
  local tool=$1 w=$2 label=$3 l0 l1 b0 t0 ng0 dn0 rc=0
  tool_cmd "$tool" "$w"
  dns_start "$(dns_port_of "$tool")"
  advertise "$(cat "$TMP/advertised")" # a fresh timestamp in the record
  # Settle the disk (dirty pages of the previous run) and the CPU first.
  timeout 120 sync || true
  wait_quiet
  l0=$(wc -l <"$ACCESS")
  b0=$(cpu_total_busy) t0=$(cpu_total_all)
  # shellcheck disable=SC2046 # word splitting of the pid list is intended
  ng0=$(cpu_of_pids $(nginx_pids)) dn0=$(cpu_of_pids "$DNS_PID")
  timeout 600 /usr/bin/time -f '%e %M %U %S' -o "$w/time" "${CMD[@]}" >"$w/out.log" 2>&1 || rc=$?
  # shellcheck disable=SC2046
  RUN_OTHERS=$(awk -v b="$(($(cpu_total_busy) - b0))" -v t="$(($(cpu_total_all) - t0))" \
    -v ng="$(($(cpu_of_pids $(nginx_pids)) - ng0))" -v dn="$(($(cpu_of_pids "$DNS_PID") - dn0))" \
    -v tool="$(awk '{ print $3 + $4 }' "$w/time" 2>/dev/null || echo 0)" -v hz="$HZ" \
    'BEGIN { if (t <= 0) { print 0; exit } o = (b - ng - dn - tool * hz) / t * 100; if (o < 0) o = 0; printf "%.0f", o }')
  dns_stop
  l1=$(wc -l <"$ACCESS")
  RUN_RC=$rc
  read -r RUN_WALL RUN_RSS RUN_USER RUN_SYS <"$w/time" 2>/dev/null || { RUN_WALL=0 RUN_RSS=0 RUN_USER=0 RUN_SYS=0; }
  RUN_CPU=$(awk -v u="$RUN_USER" -v s="$RUN_SYS" 'BEGIN { printf "%.2f", u + s }')
  sed -n "$((l0 + 1)),${l1}p" "$ACCESS" >"$w/access.log"
  RUN_REQS=$(wc -l <"$w/access.log")
  RUN_BYTES=$(awk '{ s += $2 } END { printf "%.0f", s }' "$w/access.log")
  RUN_STATUSES=$(awk '{ n[$1]++ } END { for (s in n) printf "%s%s×%d", (k++ ? " " : ""), s, n[s] }' "$w/access.log")
  if [[ $rc != 0 ]]; then
    log "$label: $tool exited $rc; its output:"
    tail -20 "$w/out.log" >&2
    echo "$label: $tool exited $rc" >>"$TMP/misbehaviour"
  fi
}

# check_served TOOL W EXPECT_CVD_VERSION -> sets CHK_CDIFFS CHK_CVD CHK_SIGNS CHK_EXTRA; records problems.
# Every served file must be byte-identical to upstream's; cvdmirror (either
# version) must serve each CVD and cdiff with its .sign, as upstream has one.
check_served() {
  local tool=$1 w=$2 want=$3 label=$4 f name hv
  CHK_CDIFFS=0 CHK_CVD=missing CHK_SIGNS=0 CHK_EXTRA=
  for f in "$w/root"/* "$w/root"/.[!.]*; do
    [[ -e $f ]] || continue
    name=${f##*/}
    case $name in
      .cvdmirror) [[ $tool == cvdmirror* ]] || CHK_EXTRA+=" $name" ;;
      "$DB.cvd")
        hv=$(head -c 512 "$f" | cut -d: -f3)
        if [[ $hv == "$want" ]] && cmp -s "$f" "$FIX/$DB-$want.cvd"; then CHK_CVD=$hv; else
          CHK_CVD="bad($hv)"
          echo "$label: $tool serves $DB.cvd version $hv that is not byte-identical to upstream $want" >>"$TMP/misbehaviour"
        fi
        ;;
      "$DB"-*.cdiff)
        if [[ -f $FIX/$name ]] && cmp -s "$f" "$FIX/$name"; then CHK_CDIFFS=$((CHK_CDIFFS + 1)); else
          echo "$label: $tool serves $name that differs from upstream" >>"$TMP/misbehaviour"
        fi
        [[ $tool != cvdmirror* || -f $f.sign ]] || echo "$label: $tool serves $name without its .sign" >>"$TMP/misbehaviour"
        ;;
      "$DB"-*.sign)
        if [[ -f $FIX/$name ]] && cmp -s "$f" "$FIX/$name"; then CHK_SIGNS=$((CHK_SIGNS + 1)); else
          echo "$label: $tool serves $name that differs from upstream" >>"$TMP/misbehaviour"
        fi
        ;;
      *) CHK_EXTRA+=" $name" ;;
    esac
  done
  if [[ $tool == cvdmirror* && $CHK_CVD == "$want" && ! -f $w/root/$DB-$want.cvd.sign ]]; then
    echo "$label: $tool serves $DB.cvd $want without $DB-$want.cvd.sign" >>"$TMP/misbehaviour"
  fi
}

RESULTS=$TMP/results.tsv
: >"$RESULTS"
: >"$TMP/misbehaviour"
TOOLS_FRESH=(cvdmirror cvdmirror-base cvdupdate cvdmirror-b1)
TOOLS_INCR=(cvdmirror cvdmirror-base cvdupdate)

order_for_rep() { # order_for_rep REP TOOL.. -> rotated so no tool always runs first
  local rep=$1 i
  shift
  local n=$#
  local t=("$@")
  for ((i = 0; i < n; i++)); do printf '%s ' "${t[$(((i + rep) % n))]}"; done
}

record() { # record SCENARIO TOOL REP W WANT
  local sc=$1 tool=$2 rep=$3 w=$4 want=$5 label="$1 $2 rep $3"
  check_served "$tool" "$w" "$want" "$label"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$tool" "$rep" "$RUN_WALL" "$RUN_RSS" "$RUN_CPU" \
    "$RUN_REQS" "$RUN_BYTES" "$CHK_CVD" "$CHK_CDIFFS" "$RUN_OTHERS" "$RUN_RC" "$RUN_STATUSES" "${CHK_EXTRA# }" "$CHK_SIGNS" >>"$RESULTS"
  log "$label: ${RUN_WALL}s, peak RSS $((RUN_RSS / 1024)) MiB, CPU ${RUN_CPU}s, $RUN_REQS requests ($RUN_STATUSES), $((RUN_BYTES / 1000)) kB; serves CVD $CHK_CVD + $CHK_CDIFFS cdiffs + $CHK_SIGNS .sign${CHK_EXTRA:+ + extra:$CHK_EXTRA}; others' CPU $RUN_OTHERS%"
  [[ $RUN_RC == 0 ]] || return 0
  [[ $CHK_CVD == "$want" ]] || echo "$label: $tool ended without $DB.cvd $want" >>"$TMP/misbehaviour"
}

run_fresh() {
  local rep tool w
  upstream_at "$VERSION"
  echo "$VERSION" >"$TMP/advertised"
  for ((rep = 1; rep <= REPS; rep++)); do
    for tool in $(order_for_rep "$rep" "${TOOLS_FRESH[@]}"); do
      w=$TMP/run-$tool
      setup_tool "$tool" "$w"
      run_tool "$tool" "$w" "fresh $tool rep $rep"
      record fresh "$tool" "$rep" "$w" "$VERSION"
      cp "$w/root/dns.txt" "$TMP/cvdupdate-dns.txt" 2>/dev/null || true
    done
  done
}

run_incremental() {
  local rep tool w
  for ((rep = 1; rep <= REPS; rep++)); do
    for tool in $(order_for_rep "$rep" "${TOOLS_INCR[@]}"); do
      w=$TMP/run-$tool
      setup_tool "$tool" "$w"
      upstream_at $((VERSION - 1))
      echo $((VERSION - 1)) >"$TMP/advertised"
      run_tool "$tool" "$w" "incremental $tool rep $rep (prepare at $((VERSION - 1)))"
      [[ $RUN_RC == 0 ]] || die "preparing $tool at $((VERSION - 1)) failed"
      check_served "$tool" "$w" $((VERSION - 1)) "incremental $tool rep $rep (prepare)"
      log "incremental $tool rep $rep: prepared at $((VERSION - 1)) with $CHK_CDIFFS cdiffs (${RUN_WALL}s, untimed)"
      upstream_at "$VERSION"
      echo "$VERSION" >"$TMP/advertised"
      run_tool "$tool" "$w" "incremental $tool rep $rep"
      record incremental "$tool" "$rep" "$w" "$VERSION"
    done
  done
}

# ---------------------------------------------------------------- run
T_START=$(date +%s)
# Warm-up, not recorded: binaries, Python modules and fixtures into the page cache.
upstream_at "$VERSION"
echo "$VERSION" >"$TMP/advertised"
for tool in "${TOOLS_INCR[@]}"; do
  setup_tool "$tool" "$TMP/warmup-$tool"
  BENCH_WAIT_QUIET=0 run_tool "$tool" "$TMP/warmup-$tool" "warm-up $tool"
  rm -rf "$TMP/warmup-$tool"
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "scenarios: ${SCENARIOS[*]}; $REPS reps; upstream $UPSTREAM; $DB.cvd $CVD_SIZE bytes, cdiffs $OLDEST..$VERSION (mean $CDIFF_MEAN bytes)"
for sc in "${SCENARIOS[@]}"; do
  case $sc in
    fresh) run_fresh ;;
    incremental) run_incremental ;;
  esac
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v sc="$1" -v t="$2" -v c="$3" '$1 == sc && $2 == t { print $c }' "$RESULTS"; }
med() { col "$1" "$2" "$3" | median; }
# Median over repetitions of TOOL/BASE from the same repetition (runs next
# to each other share the machine's background load).
paired_ratio() { # paired_ratio SCENARIO TOOL BASE COLUMN
  awk -F'\t' -v sc="$1" -v t="$2" -v base="$3" -v c="$4" '$1 == sc && $2 == t { a[$3] = $c } $1 == sc && $2 == base { b[$3] = $c }
    END { for (r in a) if ((r in b) && b[r] + 0 != 0) printf "%.4f\n", a[r] / b[r] }' "$RESULTS" | median |
    awk '{ if ($1 == "") print "n/a"; else printf "%.2f\n", $1 }'
}
label_of() {
  case $1 in
    cvdmirror) echo "(a) cvdmirror, verifies .sign (backfill = $CDIFFS)" ;;
    cvdmirror-base) echo "(b) cvdmirror ${BASELINE_COMMIT:0:7}, .sign unverified (backfill = $CDIFFS)" ;;
    cvdmirror-b1) echo "(a) with backfill = 1: cvdupdate's files + their .sign" ;;
    cvdupdate) echo "(c) cvdupdate $CVDUPDATE_VERSION" ;;
  esac
}

{
  echo "### Results — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`BENCH_REPS=$REPS bench/sync.sh ${SCENARIOS[*]}\`; $DB.cvd version $VERSION, $CVD_SIZE bytes; cdiffs $OLDEST..$VERSION upstream, mean $CDIFF_MEAN bytes; a \`.sign\` for each CVD and cdiff upstream, mean $SIGN_MEAN bytes; values are medians of $REPS runs, ratios the median of the same-repetition ratios (lower is better for all); whole run $(($(date +%s) - T_START)) s."
  echo
  echo "Machine: $NCPU cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r); load average $LOAD_START at the start, $LOAD_END at the end; upstream $(nginx -v 2>&1 | sed 's/nginx version: //') on loopback; (a) cvdmirror $COMMIT, (b) cvdmirror $BASELINE_COMMIT (the baseline: \`.sign\` fetched and published unverified) ($(rustc --version | awk '{print $1, $2}')), (c) cvdupdate $CVDUPDATE_VERSION ($("$PY" --version 2>&1))."
  echo
  printf '| scenario | tool | wall time (s) | peak RSS (MiB) | CPU user+sys (s) | requests | fetched (MB) | ends with | time / (b) | RSS / (b) | CPU / (b) | time / cvdupdate | RSS / cvdupdate | CPU / cvdupdate | others'"'"' CPU (median) |\n'
  printf '|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n'
  for sc in "${SCENARIOS[@]}"; do
    if [[ $sc == fresh ]]; then tools=("${TOOLS_FRESH[@]}"); else tools=("${TOOLS_INCR[@]}"); fi
    for t in "${tools[@]}"; do
      bt=- br=- bc=- rt=- rr=- rc=-
      if [[ $t == cvdmirror ]]; then
        bt=$(paired_ratio "$sc" "$t" cvdmirror-base 4) br=$(paired_ratio "$sc" "$t" cvdmirror-base 5) bc=$(paired_ratio "$sc" "$t" cvdmirror-base 6)
      fi
      if [[ $t != cvdupdate ]]; then
        rt=$(paired_ratio "$sc" "$t" cvdupdate 4) rr=$(paired_ratio "$sc" "$t" cvdupdate 5) rc=$(paired_ratio "$sc" "$t" cvdupdate 6)
      fi
      extra=$(col "$sc" "$t" 14 | sort -u | paste -sd/ -)
      printf '| %s | %s | %s | %s | %s | %s | %s | CVD %s + %s cdiffs + %s .sign%s | %s | %s | %s | %s | %s | %s | %s%% |\n' "$sc" "$(label_of "$t")" \
        "$(med "$sc" "$t" 4)" "$(med "$sc" "$t" 5 | awk '{ printf "%.0f", $1 / 1024 }')" "$(med "$sc" "$t" 6)" \
        "$(med "$sc" "$t" 7)" "$(med "$sc" "$t" 8 | awk '{ printf "%.1f", $1 / 1e6 }')" \
        "$(col "$sc" "$t" 9 | sort -u | paste -sd/ -)" "$(col "$sc" "$t" 10 | sort -u | paste -sd/ -)" \
        "$(col "$sc" "$t" 15 | sort -u | paste -sd/ -)" "${extra:+ + $extra}" \
        "$bt" "$br" "$bc" "$rt" "$rr" "$rc" "$(med "$sc" "$t" 11)"
    done
  done
  echo
  echo "Per run (scenario, tool, rep, wall s, peak RSS kB, CPU s, requests, body bytes, served CVD version, served cdiffs, % of the machine's CPU used by other processes, exit code, HTTP statuses, other files served, served .sign files):"
  echo
  echo '```'
  cat "$RESULTS"
  echo '```'
  busy=$(awk -F'\t' '$11 + 0 > 10 { n++ } END { print n + 0 }' "$RESULTS")
  if [[ $busy -gt 0 ]]; then
    echo
    echo "Contention: in $busy of $(wc -l <"$RESULTS") runs other processes used more than 10% of the machine's CPU; absolute times are skewed (paired ratios less so). Re-run on an idle machine for absolute numbers."
  fi
  if [[ -s $TMP/misbehaviour ]]; then
    echo
    echo "Observed problems:"
    echo
    sort -u "$TMP/misbehaviour" | sed 's/^/- /'
  fi
} >"$TMP/report.md"
echo
cat "$TMP/report.md"
if [[ -n ${BENCH_OUT:-} ]]; then cp "$TMP/report.md" "$BENCH_OUT"; log "report written to $BENCH_OUT"; fi
