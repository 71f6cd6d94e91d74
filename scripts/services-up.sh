#!/usr/bin/env bash
# Bring up PostgreSQL, MariaDB and Redis on loopback for the test suite.
# Idempotent and non-interactive: on a fresh Debian machine (as root) it
# installs and starts them; where they already run it only makes sure the
# `test` database and the `test`/`test` user exist.
#
# Afterwards:
#   TEST_DATABASE_URL=postgres://test:test@127.0.0.1:5432/test
#   TEST_MYSQL_URL=mysql://test:test@127.0.0.1:3306/test
#   TEST_REDIS_URL=redis://127.0.0.1:6379/
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
command -v pg_ctlcluster >/dev/null || need+=(postgresql postgresql-contrib)
command -v mariadbd      >/dev/null || need+=(mariadb-server)
command -v redis-server  >/dev/null || need+=(redis-server)
# The TLS tests make an RSA client key with it (the MySQL driver takes no other).
command -v openssl       >/dev/null || need+=(openssl)
# tests/pgbouncer.rs starts its own instances of it in transaction mode.
[ -x /usr/sbin/pgbouncer ]         || need+=(pgbouncer)
# tests/contrib.rs checks contrib/prometheus/alerts.yml with its promtool
# (only the tool is used; no Prometheus server is started).
command -v promtool      >/dev/null || need+=(prometheus)
# tests/dashboard_browser.rs loads /pools/dashboard in headless Chromium.
command -v chromium      >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "services-up: missing ${need[*]}; run as root to install them" >&2
    exit 1
  fi
  apt-get update -qq
  # policy-rc.d may stop apt from starting services; we start them below.
  apt-get install -y -q "${need[@]}" >/dev/null
fi

# ---------- PostgreSQL ----------
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  PGVER=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_lsclusters -h | awk -v v="$PGVER" '$1==v && $2=="main"{f=1} END{exit !f}' \
    || pg_createcluster "$PGVER" main >/dev/null
  pg_ctlcluster --skip-systemctl-redirect "$PGVER" main start 2>/dev/null \
    || pg_ctlcluster "$PGVER" main start
  for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.1; done
fi
pg_isready -h 127.0.0.1 -p 5432 >/dev/null
runuser -u postgres -- psql -qtA -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SELECT 'CREATE ROLE test LOGIN SUPERUSER PASSWORD ''test'''
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'test') \gexec
SELECT 'CREATE DATABASE test OWNER test'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'test') \gexec
SQL

# ---------- MariaDB ----------
if ! mariadb-admin ping --silent >/dev/null 2>&1; then
  service mariadb start >/dev/null 2>&1 \
    || start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 150); do mariadb-admin ping --silent >/dev/null 2>&1 && break; sleep 0.1; done
fi
mariadb-admin ping >/dev/null
# root@localhost uses unix_socket auth, so root can run this without a password.
mariadb <<'SQL'
CREATE DATABASE IF NOT EXISTS test;
CREATE USER IF NOT EXISTS 'test'@'127.0.0.1' IDENTIFIED BY 'test';
CREATE USER IF NOT EXISTS 'test'@'localhost' IDENTIFIED BY 'test';
GRANT ALL PRIVILEGES ON *.* TO 'test'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'test'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL

# ---------- Redis (loopback only, no persistence) ----------
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no \
    --logfile '' --pidfile /var/run/redis-6379.pid
  for _ in $(seq 1 100); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null

# ---------- smoke checks over TCP with the test credentials ----------
PGPASSWORD=test psql -h 127.0.0.1 -U test -d test -qtAc 'SELECT 1' >/dev/null
mariadb -h 127.0.0.1 -u test -ptest test -e 'SELECT 1' >/dev/null
echo "services up: postgres, mariadb $(mariadbd --version | awk '{print $3}'), redis"
