#!/usr/bin/env bash
# Load benchmark, loopback only, bounded: axum-pools' bench_server against the
# peer app raw-deadpool (axum + deadpool + deadpool-redis, shared/peers) on
# /plain, /db and /redis, and against raw-reqwest (axum + one shared
# reqwest::Client) on /http. For /http both fetch `/plain` from one more
# raw-reqwest instance (port 3007) that runs for the whole benchmark. Prints
# a table with req/s, p50/p99 and our throughput as a ratio of the peer's in
# the same round, `R x ±H`: H is the 95 % confidence half-width of that
# ratio, from the ratios of the round's A B B A blocks (below). With two
# rounds or more, rows `all` give each app's mean over the rounds and the
# ratio over every round's blocks. The peer against itself
# (OURS_BIN=…/raw-deadpool ROUTES=plain) reads ±0.06–0.10 per round and
# ±0.03 over four rounds: a ratio means "ours is faster" only where its
# interval stays above 1.
#
# Each round starts every app afresh (ours, raw-reqwest, raw-deadpool with
# RECYCLE=verified and with RECYCLE=fast, all idle but the one measured).
# Each route is then measured in short slices (SLICE s, 1 by default),
# alternated in mirrored blocks: ours, peer(s), peer(s) in reverse, ours
# (A B B A), repeated until each app has run DURATION seconds. This VM's
# speed swings by 10-25 % from one second to the next; slices that close
# together see the same swings, on both sides. Each app is warmed up for
# 2 s on the route first. req/s is the mean over the slices, p50/p99 the
# mean of the slices' own.
#
#   scripts/bench-http.sh                   # 2 rounds, wrk -t2 -c64, 10 s per app and route
#   ROUNDS=1 DURATION=6 SLICE=3 scripts/bench-http.sh
#   OURS_BIN=/tmp/peers-target/release/raw-deadpool ROUTES="plain db" scripts/bench-http.sh
#                                            # the peer against itself: the method's own spread
#   HTTP_POOL_MAX=16 ROUTES=http scripts/bench-http.sh
#                                            # ours capped under wrk's concurrency: 3 requests in 4 wait
#   BASE_BIN=/tmp/before/bench_server ROUTES="plain http" scripts/bench-http.sh
#                                            # also an earlier build of ours, in the same slices
#
# Needs root once on a fresh machine (services, wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=${PEERS:-../shared/peers}
ROUNDS=${ROUNDS:-2}
# Seconds per app and route, in slices of SLICE seconds (whole numbers).
DURATION=${DURATION:-10}
DURATION=${DURATION%s}
SLICE=${SLICE:-1}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUTES=${ROUTES:-plain db redis http}
# Plaintext for both apps (the peer has no TLS); ours would otherwise
# negotiate TLS with a server that offers it (sslmode=prefer, as libpq).
export DATABASE_URL=${DATABASE_URL:-postgres://test:test@127.0.0.1:5432/test?sslmode=disable}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}
export POOL_MAX=${POOL_MAX:-16}
# Our HTTP pool's cap for /http. raw-reqwest's pool has none: it holds one
# upstream connection per concurrent request, up to CONNS. By default ours
# may open as many, so both clients do the same work; that is the setting
# in which the client before the rebuild (6d3c81d) reads issue 10's
# 1.45x raw-reqwest (BENCHMARKS.md, 2026-12-04 05:58). A lower cap
# (HTTP_POOL_MAX=16, as the database pools) measures waiting for a
# connection too: the requests beyond the cap wait their turn (FIFO).
export HTTP_MAX_SIZE=${HTTP_POOL_MAX:-$CONNS}

bash scripts/services-up.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -q wrk >/dev/null; }

# examples/bench_server.rs, built by the benchmarks package: without this
# crate's dev-dependencies, whose tokio `test-util` (a mutex-guarded
# pausable clock) no production binary has and the peers do not get either.
cargo build --quiet --release -p benchmarks
OURS=${OURS_BIN:-$(pwd)/target/release/bench_server}
# An earlier build of ours (before/after a change), measured in the same
# slices as ours on every route in ROUTES (port 3004, same environment),
# labelled `base`; the table then gives ours as a ratio of it too.
BASE=${BASE_BIN:-}
(cd "$PEERS" && cargo build --quiet --release -p raw-deadpool -p raw-reqwest)
PEER=/tmp/peers-target/release/raw-deadpool
PEER_HTTP=/tmp/peers-target/release/raw-reqwest
# The upstream of both apps' /http: its /plain answers `ok`.
export UPSTREAM_URL=http://127.0.0.1:3007

RESULTS=$(mktemp)
APP_PIDS=()
UPSTREAM_PID=
stop_apps() {
  local pid
  for pid in "${APP_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  APP_PIDS=()
}
stop_upstream() {
  if [ -n "$UPSTREAM_PID" ]; then kill "$UPSTREAM_PID" 2>/dev/null || true; wait "$UPSTREAM_PID" 2>/dev/null || true; UPSTREAM_PID=; fi
}
trap 'stop_apps; stop_upstream; rm -f "$RESULTS"' EXIT

BIND=127.0.0.1:3007 "$PEER_HTTP" 2>/dev/null &
UPSTREAM_PID=$!
for _ in $(seq 1 100); do curl -sf "$UPSTREAM_URL/plain" >/dev/null && break; sleep 0.1; done
curl -sf "$UPSTREAM_URL/plain" >/dev/null || { echo "the upstream (raw-reqwest on 3007) did not start" >&2; exit 1; }

start_app() { # binary port recycle
  BIND=127.0.0.1:$2 RECYCLE=$3 "$1" 2>/dev/null &
  APP_PIDS+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$2/plain" >/dev/null && return; sleep 0.1; done
  echo "$1 did not start" >&2; exit 1
}

. scripts/wrk.sh

# The apps by label and port.
declare -A PORT=([axum-pools]=3003 [base]=3004 [raw-reqwest]=3006 [raw-deadpool-verified]=3001 [raw-deadpool-fast]=3002)
OURS_APPS=(axum-pools)
[ -z "$BASE" ] || OURS_APPS+=(base)

# `measure ROUND ROUTE APP...`: ours first (then `base`, if any). Each app warms up
# for 2 s, then the apps run in blocks of SLICE-second wrk runs, in order
# and in reverse order (A B B A), until each has run DURATION seconds; one
# line per app: "round route app req/s p50 p99 errors".
measure() {
  local round=$1 route=$2 app i block blocks order=()
  shift 2
  for app in "$@"; do wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$app]}/$route" >/dev/null; done
  for app in "$@"; do order+=("$app"); done
  for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done
  blocks=$((DURATION / (2 * SLICE)))
  ((blocks >= 1)) || blocks=1
  declare -A got=()
  for ((block = 0; block < blocks; block++)); do
    for app in "${order[@]}"; do
      got[$app]+="$(wrk_once "http://127.0.0.1:${PORT[$app]}/$route" "${SLICE}s")"$'\n'
    done
  done
  for app in "$@"; do
    # Slices of equal length: req/s is their mean; p50 and p99 are the
    # means of the slices' own; errors are summed (socket errors by kind).
    # The last field: the app's req/s per block (the mean of its two
    # slices in it), for the spread of the ratios.
    awk -v r="$round" -v route="$route" -v app="$app" '
      NF { n++; rps += $1; p50 += $2; p99 += $3
           if (n % 2) half = $1; else blocks = blocks (blocks == "" ? "" : ",") sprintf("%.0f", (half + $1) / 2)
           k = split($4, e, "+")
           for (j = 1; j <= k; j++) { if (split(e[j], kv, ":") == 2) sock[kv[1]] += kv[2]; else bad += e[j] } }
      END { errors = bad + 0; for (kind in sock) errors = errors "+" kind ":" sock[kind]
            printf "%s %s %s %.0f %.2f %.2f %s %s\n", r, route, app, rps / n, p50 / n, p99 / n, errors, blocks }
    ' <<<"${got[$app]}" | tee -a "$RESULTS" | cut -d' ' -f1-7
  done
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; wrk -t$THREADS -c$CONNS, ${DURATION} s per app and route in ${SLICE} s slices (A B B A); POOL_MAX=$POOL_MAX, ours' HTTP pool $HTTP_MAX_SIZE${BASE:+; base $BASE}"
for round in $(seq 1 "$ROUNDS"); do
  start_app "$OURS" 3003 verified
  [ -z "$BASE" ] || start_app "$BASE" 3004 verified
  start_app "$PEER_HTTP" 3006 -
  start_app "$PEER" 3001 verified
  start_app "$PEER" 3002 fast
  for route in $ROUTES; do
    case $route in
      http) measure "$round" http "${OURS_APPS[@]}" raw-reqwest ;;
      db) measure "$round" db "${OURS_APPS[@]}" raw-deadpool-verified raw-deadpool-fast ;;
      *) measure "$round" "$route" "${OURS_APPS[@]}" raw-deadpool-verified ;;
    esac
  done
  stop_apps
done

echo
echo "Ratios: ours' mean req/s over the peer's; ± is the 95 % confidence half-width of the ratio, from the ratios of the A B B A blocks (paired; Student's t). \`all\` pools every round's blocks."
echo
echo "| round | route | app | req/s | p50 ms | p99 ms | errors | vs raw-deadpool (verified) | vs raw-deadpool (fast) | vs raw-reqwest | vs base |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
awk '
  # t(0.975, df) for df = 1..30; beyond, 1.96.
  function t975(df) {
    split("12.71 4.30 3.18 2.78 2.57 2.45 2.36 2.31 2.26 2.23 2.20 2.18 2.16 2.14 2.13 2.12 2.11 2.10 2.09 2.09 2.08 2.07 2.07 2.06 2.06 2.06 2.05 2.05 2.05 2.04", tt, " ")
    return df <= 30 ? tt[df] + 0 : 1.96
  }
  # "R x ±H" for the apps keyed a over b: R from the means, H from the
  # per-block ratios (listed comma-separated in blocks[]).
  function ratio(a, b,    na, nb, x, y, i, n, m, ss, h) {
    if (!(a in rps) || !(b in rps) || rps[b] == 0) return ""
    na = split(blocks[a], x, ","); nb = split(blocks[b], y, ",")
    if (na != nb || na < 2) return sprintf("%.2fx", rps[a] / rps[b])
    n = na; m = 0; ss = 0
    for (i = 1; i <= n; i++) { q[i] = x[i] / y[i]; m += q[i] }
    m /= n
    for (i = 1; i <= n; i++) ss += (q[i] - m) ^ 2
    h = t975(n - 1) * sqrt(ss / (n - 1)) / sqrt(n)
    return sprintf("%.2fx ±%.2f", rps[a] / rps[b], h)
  }
  {
    key = $1" "$2; rps[key" "$3] = $4; blocks[key" "$3] = $8; line[NR] = $0
    all = "all "$2" "$3; sum[all] += $4; cnt[all]++
    blocks[all] = blocks[all] (blocks[all] == "" ? "" : ",") $8
    if (!(("all "$2) in seen)) { seen["all "$2] = 1; order[++routes] = $2 }
    if (!(($2" "$3) in seenapp)) { seenapp[$2" "$3] = 1; apps[$2] = apps[$2] " " $3 }
  }
  function row(r, route, app, req, p50, p99, errors,    key, ours) {
    key = r" "route
    ours = (app == "axum-pools" || app == "base")
    printf "| %s | /%s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r, route, app, req, p50, p99, errors,
      ours ? ratio(key" "app, key" raw-deadpool-verified") : "",
      ours ? ratio(key" "app, key" raw-deadpool-fast") : "",
      ours ? ratio(key" "app, key" raw-reqwest") : "",
      app == "axum-pools" ? ratio(key" "app, key" base") : ""
  }
  END {
    for (i = 1; i <= NR; i++) {
      split(line[i], f, " ")
      row(f[1], f[2], f[3], f[4], f[5], f[6], f[7])
    }
    if (NR == 0 || rounds() < 2) exit
    for (a in sum) rps[a] = sprintf("%.0f", sum[a] / cnt[a])
    for (k = 1; k <= routes; k++) {
      n = split(substr(apps[order[k]], 2), list, " ")
      for (j = 1; j <= n; j++) row("all", order[k], list[j], rps["all "order[k]" "list[j]], "", "", "")
    }
  }
  function rounds(    i, f, top) { for (i = 1; i <= NR; i++) { split(line[i], f, " "); if (f[1] > top) top = f[1] } return top }
  ' "$RESULTS"
