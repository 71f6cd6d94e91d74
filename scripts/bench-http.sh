#!/usr/bin/env bash
# Load benchmark, loopback only, bounded: axum-pools' bench_server against the
# peer app raw-deadpool (axum + deadpool + deadpool-redis, shared/peers) on
# /plain, /db and /redis, and against raw-reqwest (axum + one shared
# reqwest::Client) on /http; the apps run alternately in one run, each freshly
# started. For /http both fetch `/plain` from one more raw-reqwest instance
# (port 3007) that runs for the whole benchmark. Prints a table with req/s,
# p50/p99 and our throughput as a ratio of the peer's in the same round.
#
#   scripts/bench-http.sh                   # 2 rounds, wrk -t2 -c64 -d10s, 2 s warm-up
#   ROUNDS=1 DURATION=5s scripts/bench-http.sh
#
# Needs root once on a fresh machine (services, wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=${PEERS:-../shared/peers}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
# Plaintext for both apps (the peer has no TLS); ours would otherwise
# negotiate TLS with a server that offers it (sslmode=prefer, as libpq).
export DATABASE_URL=${DATABASE_URL:-postgres://test:test@127.0.0.1:5432/test?sslmode=disable}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}
export POOL_MAX=${POOL_MAX:-16}

bash scripts/services-up.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -q wrk >/dev/null; }

# examples/bench_server.rs, built by the benchmarks package: without this
# crate's dev-dependencies, whose tokio `test-util` (a mutex-guarded
# pausable clock) no production binary has and the peers do not get either.
cargo build --quiet --release -p benchmarks
OURS=$(pwd)/target/release/bench_server
(cd "$PEERS" && cargo build --quiet --release -p raw-deadpool -p raw-reqwest)
PEER=/tmp/peers-target/release/raw-deadpool
PEER_HTTP=/tmp/peers-target/release/raw-reqwest
# The upstream of both apps' /http: its /plain answers `ok`.
export UPSTREAM_URL=http://127.0.0.1:3007

RESULTS=$(mktemp)
APP_PID=
UPSTREAM_PID=
stop_app() {
  if [ -n "$APP_PID" ]; then kill "$APP_PID" 2>/dev/null || true; wait "$APP_PID" 2>/dev/null || true; APP_PID=; fi
}
stop_upstream() {
  if [ -n "$UPSTREAM_PID" ]; then kill "$UPSTREAM_PID" 2>/dev/null || true; wait "$UPSTREAM_PID" 2>/dev/null || true; UPSTREAM_PID=; fi
}
trap 'stop_app; stop_upstream; rm -f "$RESULTS"' EXIT

BIND=127.0.0.1:3007 "$PEER_HTTP" 2>/dev/null &
UPSTREAM_PID=$!
for _ in $(seq 1 100); do curl -sf "$UPSTREAM_URL/plain" >/dev/null && break; sleep 0.1; done
curl -sf "$UPSTREAM_URL/plain" >/dev/null || { echo "the upstream (raw-reqwest on 3007) did not start" >&2; exit 1; }

start_app() { # binary port recycle
  BIND=127.0.0.1:$2 RECYCLE=$3 "$1" 2>/dev/null &
  APP_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$2/plain" >/dev/null && return; sleep 0.1; done
  echo "$1 did not start" >&2; exit 1
}

. scripts/wrk.sh

measure() { # label port route round
  printf '%s %s %s %s\n' "$4" "$3" "$1" "$(wrk_run "http://127.0.0.1:$2/$3")" | tee -a "$RESULTS"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; wrk -t$THREADS -c$CONNS -d$DURATION; POOL_MAX=$POOL_MAX"
for round in $(seq 1 "$ROUNDS"); do
  start_app "$OURS" 3003 -
  for route in plain db redis http; do measure axum-pools 3003 "$route" "$round"; done
  stop_app
  start_app "$PEER_HTTP" 3006 -
  for route in http; do measure raw-reqwest 3006 "$route" "$round"; done
  stop_app
  start_app "$PEER" 3001 verified
  for route in plain db redis; do measure raw-deadpool-verified 3001 "$route" "$round"; done
  stop_app
  start_app "$PEER" 3001 fast
  for route in db; do measure raw-deadpool-fast 3001 "$route" "$round"; done
  stop_app
done

echo
echo "| round | route | app | req/s | p50 ms | p99 ms | errors | vs raw-deadpool (verified) | vs raw-deadpool (fast) | vs raw-reqwest |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk '
  { key=$1" "$2; rps[key" "$3]=$4; line[NR]=$0 }
  END {
    for (i=1; i<=NR; i++) {
      split(line[i], f, " ");
      key=f[1]" "f[2];
      v=rps[key" raw-deadpool-verified"]; fa=rps[key" raw-deadpool-fast"]; rq=rps[key" raw-reqwest"];
      r1 = (f[3]=="axum-pools" && v>0) ? sprintf("%.2fx", f[4]/v) : "";
      r2 = (f[3]=="axum-pools" && fa>0) ? sprintf("%.2fx", f[4]/fa) : "";
      r3 = (f[3]=="axum-pools" && rq>0) ? sprintf("%.2fx", f[4]/rq) : "";
      printf "| %s | /%s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], r1, r2, r3;
    }
  }' "$RESULTS"
