#!/usr/bin/env bash
# The database goes away under load: how fast are the 503s once the pool's
# circuit breaker opens? Loopback only, bounded (fixed-length wrk runs).
#
# Starts a throwaway PostgreSQL cluster on a free port (never the shared one),
# serves examples/bench_server.rs against it, loads /db with wrk, stops the
# cluster (immediate shutdown), and loads /db again: prints the latency
# distribution of that second run and one response.
#
#   scripts/bench-breaker.sh            # DURATION=10s CONNS=64 THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}

bash scripts/services-up.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -q wrk >/dev/null; }
# The benchmarks package: examples/bench_server.rs built without dev-dependencies.
cargo build --quiet --release -p benchmarks

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
chown postgres "$DIR"
APP_PID=
cleanup() {
  [ -n "$APP_PID" ] && { kill "$APP_PID" 2>/dev/null || true; wait "$APP_PID" 2>/dev/null || true; }
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

runuser -u postgres -- "$PGBIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1" start >/dev/null

DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/postgres BIND=127.0.0.1:3004 \
  ./target/release/bench_server 2>/dev/null &
APP_PID=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:3004/plain >/dev/null && break; sleep 0.1; done

echo "# $(date -u +%FT%TZ) $(nproc) cores; wrk -t$THREADS -c$CONNS -d$DURATION; throwaway postgres on :$PORT"
echo "## database up"
wrk -t"$THREADS" -c"$CONNS" -d3s --latency http://127.0.0.1:3004/db | grep -E "Latency|50%|99%|Requests/sec|Non-2xx"

runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null
echo "## database stopped (immediate shutdown) under load"
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency http://127.0.0.1:3004/db \
  | grep -E "Latency|50%|75%|90%|99%|Requests/sec|Non-2xx|requests in"
echo "## the same, light load (wrk -t1 -c4): latency without queueing"
wrk -t1 -c4 -d"$DURATION" --latency http://127.0.0.1:3004/db \
  | grep -E "Latency|50%|75%|90%|99%|Requests/sec|Non-2xx"
echo "## reference: /plain (no pool) at the same light load"
wrk -t1 -c4 -d"$DURATION" --latency http://127.0.0.1:3004/plain \
  | grep -E "Latency|50%|75%|90%|99%|Requests/sec"
echo "## one response"
curl -si http://127.0.0.1:3004/db | sed -n '1p;/retry-after/Ip;$p'
echo
echo "## the pool's stats"
curl -s http://127.0.0.1:3004/pools/stats/db 2>/dev/null || true
