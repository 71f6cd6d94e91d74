#!/usr/bin/env bash
# The test command: brings up Postgres, MariaDB and Redis on loopback when
# they are absent (installs them as root on a fresh Debian machine), then runs
# the whole suite with all features, the doc-tests, the suite again without
# `test-util`, a build of every feature combination a user can pick, and
# the API docs.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh

cargo test --all-features --all-targets
cargo test --all-features --doc
# Once more on the production bookkeeping clock: every feature but test-util
# (which makes connection ageing follow tokio's pausable clock).
cargo test --features postgres,mysql,sqlite,redis,http --lib --tests
# The served OpenAPI document is the committed one with SQLite alone too.
cargo test --no-default-features --features sqlite --test openapi

for features in "" "--no-default-features" \
  "--no-default-features --features postgres" \
  "--no-default-features --features mysql" \
  "--no-default-features --features sqlite" \
  "--no-default-features --features redis" \
  "--no-default-features --features http"; do
  echo "cargo clippy $features"
  # shellcheck disable=SC2086
  cargo clippy --quiet $features -- -D warnings
done

# The API docs as docs.rs shows them (every feature): no broken or
# redundant intra-doc link.
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --all-features
