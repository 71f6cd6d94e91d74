#!/usr/bin/env bash
# What `transaction_pooling` costs, loopback only, bounded: bench_server's
# /db (DbConn, `SELECT 1` through diesel) under wrk, in one run, five ways:
#   direct            Postgres, knob off (the baseline)
#   direct+tp         Postgres, DB_TRANSACTION_POOLING=true (the mechanism alone)
#   session           a PgBouncer in session mode, knob off (the hop alone)
#   pgbouncer+tp      a PgBouncer in transaction mode (default_pool_size=4), knob on
#   pgbouncer         the same PgBouncer, knob off (the failure the knob fixes)
# Prints req/s, p50/p99, non-2xx and the ratio to `direct` in the same round.
#
#   scripts/bench-pgbouncer.sh                 # 3 rounds, wrk -t2 -c32 -d10s
#   ROUNDS=1 DURATION=5s scripts/bench-pgbouncer.sh
#
# Needs root (services, wrk, pgbouncer; PgBouncer runs as the postgres user).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
SERVER_CONNS=${SERVER_CONNS:-4}
export POOL_MAX=${POOL_MAX:-16}
DIRECT=postgres://test:test@127.0.0.1:5432/test?sslmode=disable
# bench_server's other routes; unused here.
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}
export UPSTREAM_URL=${UPSTREAM_URL:-http://127.0.0.1:9}

bash scripts/services-up.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -q wrk >/dev/null; }

# The benchmarks package: examples/bench_server.rs built without dev-dependencies.
cargo build --quiet --release -p benchmarks
OURS=$(pwd)/target/release/bench_server

DIR=$(mktemp -d)
echo '"test" "test"' >"$DIR/users.txt"
BOUNCER_PIDS=()
start_bouncer() { # name pool_mode default_pool_size -> sets PORT
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$DIR/$1.ini" <<EOF
[databases]
test = host=127.0.0.1 port=5432 dbname=test user=test password=test
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/users.txt
pool_mode = $2
default_pool_size = $3
max_client_conn = 1000
logfile = $DIR/$1.log
EOF
  chown -R postgres:postgres "$DIR"
  setpriv --reuid=postgres --regid=postgres --init-groups -- /usr/sbin/pgbouncer "$DIR/$1.ini" >/dev/null 2>&1 &
  BOUNCER_PIDS+=($!)
  for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
}
start_bouncer transaction transaction "$SERVER_CONNS"
BOUNCER=postgres://test:test@127.0.0.1:$PORT/test
start_bouncer session session "$POOL_MAX"
SESSION=postgres://test:test@127.0.0.1:$PORT/test

RESULTS=$(mktemp)
APP_PID=
stop_app() {
  if [ -n "$APP_PID" ]; then kill "$APP_PID" 2>/dev/null || true; wait "$APP_PID" 2>/dev/null || true; APP_PID=; fi
}
trap 'stop_app; kill "${BOUNCER_PIDS[@]}" 2>/dev/null || true; rm -rf "$DIR" "$RESULTS"' EXIT

start_app() { # url transaction_pooling
  BIND=127.0.0.1:3003 DATABASE_URL=$1 DB_TRANSACTION_POOLING=$2 "$OURS" 2>/dev/null &
  APP_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:3003/plain" >/dev/null && return 0; sleep 0.1; done
  stop_app
  return 1
}

. scripts/wrk.sh

measure() { # label round
  printf '%s %s %s\n' "$2" "$1" "$(wrk_run http://127.0.0.1:3003/db)" | tee -a "$RESULTS"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; wrk -t$THREADS -c$CONNS -d$DURATION; POOL_MAX=$POOL_MAX; pgbouncer $(/usr/sbin/pgbouncer --version | head -1 | awk '{print $2}') default_pool_size=$SERVER_CONNS (session mode: $POOL_MAX)"
for round in $(seq 1 "$ROUNDS"); do
  for way in "direct $DIRECT false" "direct+tp $DIRECT true" "session $SESSION false" \
    "pgbouncer+tp $BOUNCER true" "pgbouncer $BOUNCER false"; do
    set -- $way
    if start_app "$2" "$3"; then
      measure "$1" "$round"
      stop_app
    else
      printf '%s %s 0 - - did-not-start\n' "$round" "$1" | tee -a "$RESULTS"
    fi
  done
done

echo
echo "| round | way | req/s | p50 ms | p99 ms | non-2xx | vs direct |"
echo "|---|---|---|---|---|---|---|"
awk '
  { rps[$1" "$2]=$3; line[NR]=$0 }
  END {
    for (i=1; i<=NR; i++) {
      split(line[i], f, " ");
      d=rps[f[1]" direct"];
      r = (d>0) ? sprintf("%.2fx", f[3]/d) : "";
      printf "| %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4], f[5], f[6], r;
    }
  }' "$RESULTS"
