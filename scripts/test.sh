#!/usr/bin/env bash
# Runs chatflow's whole test suite: unit tests, property tests and the integration tests that
# drive the release binary (built once, here), the real broker, ClickHouse and a headless
# browser. Needs only the Rust toolchain; the scripts install the rest when missing. The
# browser tests leave screenshots of the dashboard in target/screenshots/.
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is not on PATH; install the Rust toolchain (rustup) first" >&2
    exit 1
fi

# Real data sets beside the checkout are used when present; say so either way.
if [ -d ../shared/data ]; then
    echo "scripts/test.sh: real data found in ../shared/data"
else
    echo "scripts/test.sh: ../shared/data is absent; tests on real logs will report SKIPPED"
fi

# Every target once (the binary, the tests and the benches), before any server starts: a
# bench that no longer compiles fails the suite here.
cargo build --release --workspace --all-targets --locked

# The Kafka tests share one broker on 127.0.0.1:9092, the ClickHouse tests one server on
# 127.0.0.1:8123 and the browser tests one chromedriver (headless Chromium) on 127.0.0.1:9515
# (each installed when missing), fresh per run.
stop_all() {
    scripts/kafka.sh stop >/dev/null 2>&1 || true
    scripts/clickhouse.sh stop >/dev/null 2>&1 || true
    scripts/browser.sh stop >/dev/null 2>&1 || true
    scripts/netns.sh down >/dev/null 2>&1 || true
}
stop_all
rm -rf target/kafka-9092 target/clickhouse-8123 target/screenshots
trap stop_all EXIT
scripts/kafka.sh start
scripts/clickhouse.sh start
scripts/browser.sh start
# Two network namespaces joined by a veth pair (root): a cluster of two processes on two
# "machines" (tests/it/netns.rs).
scripts/netns.sh up
# A current ClickHouse embedded (chdb-core, ClickHouse 26.9) in a venv, to check every
# statement chatflow sends (tests/it/clickhouse.rs, scripts/lib/chdb_check.py); no server.
. scripts/lib/venv.sh
venv_with target/chdb-venv chdb chdb-core==26.9.0

cargo test --release --workspace --locked "$@"
