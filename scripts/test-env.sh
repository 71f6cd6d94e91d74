# Sourced by scripts/test.sh and scripts/coverage.sh: brings the servers up
# (scripts/services-up.sh) and points the suite at them, unless the caller
# set the URLs already.
bash scripts/services-up.sh

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://test:test@127.0.0.1:5432/test}"
export TEST_MYSQL_URL="${TEST_MYSQL_URL:-mysql://test:test@127.0.0.1:3306/test}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
