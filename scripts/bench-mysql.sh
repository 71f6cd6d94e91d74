#!/usr/bin/env bash
# What MySQL's `query_timeout` costs, loopback only, bounded: bench_server's
# /mysql (DbConn<AsyncMysqlConnection>, `SELECT 1` through diesel) under wrk,
# with MYSQL_QUERY_TIMEOUT unset and =1s (each connection then goes through
# the crate's loopback relay, which cuts a silent server off), alternated.
# Each start of the server gets three wrk runs: the end of a run cancels the
# requests in flight, whose connections must not answer the next run wrongly.
# Prints req/s, p50/p99 and non-2xx per run, then the pool's stats.
#
#   scripts/bench-mysql.sh                 # 2 rounds, wrk -t2 -c64 -d8s
#   ROUNDS=1 DURATION=5s scripts/bench-mysql.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
export POOL_MAX=${POOL_MAX:-16}
export DATABASE_URL=${DATABASE_URL:-postgres://test:test@127.0.0.1:5432/test?sslmode=disable}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}
export MYSQL_URL=${MYSQL_URL:-mysql://test:test@127.0.0.1:3306/test?ssl-mode=DISABLED}
export BIND=127.0.0.1:3003

bash scripts/services-up.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -q wrk >/dev/null; }
# The benchmarks package: examples/bench_server.rs built without dev-dependencies.
cargo build --quiet --release -p benchmarks --features mysql
OURS=$(pwd)/target/release/bench_server
. scripts/wrk.sh

APP_PID=
stop_app() {
  if [ -n "$APP_PID" ]; then kill "$APP_PID" 2>/dev/null || true; wait "$APP_PID" 2>/dev/null || true; APP_PID=; fi
}
trap stop_app EXIT

run() { # query_timeout ("" for off)
  if [ -n "$1" ]; then export MYSQL_QUERY_TIMEOUT=$1; else unset MYSQL_QUERY_TIMEOUT; fi
  "$OURS" 2>/dev/null &
  APP_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://$BIND/plain" >/dev/null && break; sleep 0.1; done
  for i in 1 2 3; do
    echo "query_timeout=${1:-off} run $i: $(wrk_run "http://$BIND/mysql")"
  done
  curl -s "http://$BIND/pools/stats/mysql"; echo
  stop_app
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round"
  run ""
  run 1s
done
