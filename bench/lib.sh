# shellcheck shell=bash
# Shared by the benchmarks (bench/serve.sh, sync.sh, instructions.sh,
# incident.sh, fleet.sh):
# logging, installing what a bench needs, and cleaning up every process it
# started and its temp directory on exit, failure or Ctrl-C. Source it after
# setting BENCH_NAME.

log() { printf '[%s %(%H:%M:%S)T] %s\n' "${BENCH_NAME:-bench}" -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  if [[ -z ${APT_UPDATED:-} ]]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || die "could not install $2"
}

# bench_tmp PREFIX: a temp dir in TMP, removed on exit (kept with
# BENCH_KEEP_TMP=1); every pid added to STARTED_PIDS is stopped on exit.
bench_tmp() {
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  STARTED_PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${STARTED_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}

# bench_commit REPO: the commit measured, marked when the source differs from it.
bench_commit() {
  local commit
  commit=$(git -C "$1" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$1" diff --quiet HEAD -- src crates Cargo.toml Cargo.lock 2>/dev/null || commit="$commit (with local changes)"
  echo "$commit"
}

# free_port START -> the first TCP port from START nothing listens on (needs ss).
free_port() {
  local p
  for ((p = $1; p < $1 + 200; p++)); do
    [[ -z $(ss -Htln "( sport = :$p )") ]] && { echo "$p"; return 0; }
  done
  die "no free port near $1"
}

# The User-Agent the benchmarks' clients send: freshclam's.
CLAMAV_UA='ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: 7f3c1a52-0d3e-4b8e-9d7a-1c2b3d4e5f60)'

# write_wrk_get FILE ['Name: value'...]: a wrk script sending GET with these
# headers and freshclam's User-Agent.
write_wrk_get() {
  local file=$1 header
  shift
  {
    echo 'wrk.method = "GET"'
    for header in "$@"; do
      printf 'wrk.headers["%s"] = "%s"\n' "${header%%: *}" "${header#*: }"
    done
    printf 'wrk.headers["User-Agent"] = "%s"\n' "$CLAMAV_UA"
  } >"$file"
}

# write_check_lua FILE: wrk's script for freshclam's header check (a new
# connection per request, the first 512 bytes).
write_check_lua() { write_wrk_get "$1" 'Range: bytes=0-511' 'Connection: close'; }

# date_like_cvdmirror CVD: sets the file's mtime to its header's build time
# (nginx's Last-Modified is the mtime, cvdmirror's the header's stime), and
# prints that time as an HTTP date, for `If-Modified-Since`.
date_like_cvdmirror() {
  local stime
  stime=$(head -c 512 "$1" | tr -d ' \0' | awk -F: '{print $NF}')
  [[ $stime =~ ^[0-9]+$ ]] || die "cannot read the build time in $1's header"
  touch -d "@$stime" "$1"
  TZ=GMT LC_ALL=C date -d "@$stime" '+%a, %d %b %Y %H:%M:%S GMT'
}

# need_serving_peers: what a serving comparison needs besides cvdmirror:
# nginx, wrk, curl, pgrep and ss, cargo to build, and the fixture ($FIXTURE).
need_serving_peers() {
  need nginx nginx
  need wrk wrk
  need curl curl
  need pgrep procps
  need ss iproute2
  command -v cargo >/dev/null 2>&1 || die "cargo is required"
  [[ -r $FIXTURE ]] || die "fixture not found: $FIXTURE"
}

# write_mirror_nginx_conf DIR PORT ROOT USER WORKERS ACCESS_LOG(file|off) OFC(0|1) NOFILE
# writes DIR/nginx.conf, nginx as a static mirror of ROOT on 127.0.0.1:PORT
# the way bench/serve.sh compares it (sendfile, `if_modified_since before`,
# unlimited keep-alive requests), and has nginx check it.
write_mirror_nginx_conf() {
  local dir=$1 port=$2 root=$3 user=$4 workers=$5 log_line ofc_line
  mkdir -p "$dir/logs" "$dir/tmp"
  if [[ $6 == file ]]; then log_line="access_log $dir/logs/access.log;"; else log_line="access_log off;"; fi
  if [[ $7 == 1 ]]; then ofc_line="open_file_cache max=1000 inactive=60s; open_file_cache_valid 60s;"; else ofc_line="open_file_cache off;"; fi
  cat >"$dir/nginx.conf" <<EOF
# Written by write_mirror_nginx_conf (bench/lib.sh) for ${0##*/}.
user $user;
worker_processes $workers;
worker_rlimit_nofile $8;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections $8; }
http {
  types { application/octet-stream cvd cld cdiff; }
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  $log_line
  $ofc_line
  # freshclam's If-Modified-Since is its local file's stime: answer 304 when the
  # file is not newer (RFC 9110), not only on an exact match (nginx's default).
  if_modified_since before;
  keepalive_timeout 65s;
  keepalive_requests 100000000;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server {
    listen 127.0.0.1:$port backlog=4096;
    root $root;
    location / { }
  }
}
EOF
  nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" || die "nginx config $dir/nginx.conf is invalid"
}

# ------------------------------------------------ herd benchmarks' helpers
# (bench/incident.sh, bench/fleet.sh)

# q FULL QUICK: the value for a full run, or with QUICK=1 for a quick one.
q() { if [[ ${QUICK:-0} == 1 ]]; then echo "$2"; else echo "$1"; fi; }

kv() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }'; }

# probe_stats FILE LO_MS HI_MS -> "n p50 p99 failures" (a failure ranks as
# slower than any answer, so a p99 of "fail" means >= 1% failed)
probe_stats() {
  awk -F'\t' -v lo="$2" -v hi="$3" '$1 >= lo && $1 <= hi { if ($3 == 1) print $2; else print 1e9 }' "$1" | sort -g |
    awk '{ v[NR] = $1; if ($1 >= 1e9) f++ }
      function pct(p,  i) { i = int(p * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; return v[i] >= 1e9 ? "fail" : sprintf("%.1f", v[i]) }
      END { if (NR == 0) print 0, "-", "-", 0; else print NR, pct(0.5), pct(0.99), f + 0 }'
}

# probe_stats_calm PROBE_FILE STEAL_FILE LO_MS HI_MS -> "n p50 p99 failures"
# over the probe requests during which the hypervisor stole no CPU time
# (no steal tick within 20 ms of the request; the counter moves in 10 ms
# ticks, so "none" means less than about 10 ms stolen across all CPUs).
probe_stats_calm() {
  awk -F'\t' -v lo="$3" -v hi="$4" '
    FNR == NR { if (FNR == 1) base = $1; if ($2 > 0) stolen[int(($1 - base) / 10)] = 1; next }
    $1 >= lo && $1 <= hi {
      # Keys relative to the first sample: mawk prints large numbers as %.6g.
      for (b = int(($1 - base - 20) / 10); b <= int(($1 - base + $2 + 20) / 10); b++) if (b in stolen) next
      if ($3 == 1) print $2; else print 1e9
    }' "$2" "$1" | sort -g |
    awk '{ v[NR] = $1; if ($1 >= 1e9) f++ }
      function pct(p,  i) { i = int(p * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; return v[i] >= 1e9 ? "fail" : sprintf("%.1f", v[i]) }
      END { if (NR == 0) print 0, "-", "-", 0; else print NR, pct(0.5), pct(0.99), f + 0 }'
}

# steal_share STEAL_FILE LO_MS HI_MS -> % of the machine's CPU time stolen
steal_share() {
  awk -F'\t' -v lo="$2" -v hi="$3" -v hz="$HZ" -v n="$NCPU" '$1 > lo && $1 <= hi { t += $2 }
    END { d = (hi - lo) / 1000; if (d > 0) printf "%.0f\n", t / (hz * n * d) * 100; else print 0 }' "$1"
}

cpu_total_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# write_herd_data BUILDER: the herd's files in $TMP (DAILY_BYTES big):
# MIRROR with a daily.cvd (its header names BUILDER) and the cdiffs 27828
# and 27830 (27829 is missing, the failed update, so clients two versions
# behind fall back to the whole daily.cvd), and WWW with an 8 KiB page.
# Sets MIRROR, WWW, DAILY_STIME, OLD_STIME and IMS_OLD (an If-Modified-Since
# older than daily.cvd).
write_herd_data() {
  MIRROR=$TMP/mirror
  WWW=$TMP/www
  mkdir -p "$MIRROR" "$WWW"
  chmod 755 "$TMP" "$MIRROR" "$WWW"
  DAILY_STIME=$(($(date +%s) - 3600))
  OLD_STIME=$((DAILY_STIME - 2 * 86400))
  IMS_OLD=$(TZ=GMT LC_ALL=C date -d "@$OLD_STIME" '+%a, %d %b %Y %H:%M:%S GMT')
  head -c $((DAILY_BYTES - 512)) /dev/urandom >"$TMP/body"
  local md5
  md5=$(md5sum "$TMP/body" | cut -d' ' -f1)
  {
    printf '%-512s' "ClamAV-VDB:$(LC_ALL=C date -u -d "@$DAILY_STIME" '+%d %b %Y %H-%M +0000'):27830:2071234:90:$md5:unsigned-benchmark-file:$1:$DAILY_STIME"
    cat "$TMP/body"
  } >"$MIRROR/daily.cvd"
  rm -f "$TMP/body"
  touch -d "@$DAILY_STIME" "$MIRROR/daily.cvd"
  local v
  for v in 27828 27830; do
    { printf 'ClamAV-Diff:%s:1024:' "$v"; head -c 30000 /dev/urandom; } >"$MIRROR/daily-$v.cdiff"
  done
  {
    echo '<!doctype html><html><head><title>bench</title></head><body>'
    for _ in $(seq 200); do echo '<p>The voice server and this page share the link with the mirror.</p>'; done
  } >"$WWW/index.html"
  truncate -s 8192 "$WWW/index.html"
  chmod 644 "$MIRROR"/* "$WWW"/*
}
