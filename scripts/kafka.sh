#!/usr/bin/env bash
# Installs (when missing) and runs tansu, an Apache Kafka-compatible broker, on 127.0.0.1.
#
# Usage: scripts/kafka.sh start [sqlite|memory] | stop | restart | status | topic NAME PARTITIONS
#
#   sqlite (default) keeps the log in $KAFKA_DIR/tansu.db and survives a restart; memory is
#   about ten times faster and is for benchmarks.
#   KAFKA_PORT (default 9092) and KAFKA_DIR (default target/kafka-$KAFKA_PORT) let a test run a
#   broker of its own beside the shared one.
#
# The install is `cargo install tansu --features dynostore,libsql` (13-19 minutes on 2 cores),
# skipped when `tansu` is already on PATH or in ~/.cargo/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${KAFKA_PORT:-9092}
dir=${KAFKA_DIR:-target/kafka-$port}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

install() {
    if ! command -v tansu >/dev/null 2>&1; then
        echo "kafka.sh: installing tansu (cargo install tansu --features dynostore,libsql; 13-19 minutes)" >&2
        cargo install tansu --features dynostore,libsql --locked >&2
    fi
}

# shellcheck source=lib/pidfile.sh
. scripts/lib/pidfile.sh  # (the working directory is the checkout)

listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

start() {
    local storage=${1:-sqlite}
    install
    if running; then
        echo "kafka.sh: broker already running on 127.0.0.1:$port (pid $(cat "$dir/pid"))"
        return 0
    fi
    local engine
    case "$storage" in
        sqlite) engine="sqlite://tansu.db" ;;
        memory) engine="memory://tansu/" ;;
        *) echo "kafka.sh: unknown storage '$storage' (sqlite or memory)" >&2; exit 2 ;;
    esac
    (
        cd "$dir"
        nohup tansu broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "$engine" >>broker.log 2>&1 &
        echo $! >pid
    )
    await_server "kafka.sh: broker on 127.0.0.1:$port ($storage storage, data in $dir)" 10 listening "$dir/broker.log"
}

stop() {
    stop_server "kafka.sh: broker on 127.0.0.1:$port" 10
}

case "${1:-}" in
    start) start "${2:-sqlite}" ;;
    stop) stop ;;
    restart) stop; start "${2:-sqlite}" ;;
    status)
        if running && listening; then echo "kafka.sh: running on 127.0.0.1:$port"; else echo "kafka.sh: not running"; exit 1; fi ;;
    topic)
        [ $# -eq 3 ] || { echo "usage: scripts/kafka.sh topic NAME PARTITIONS" >&2; exit 2; }
        tansu topic create "$2" --partitions "$3" --broker "tcp://127.0.0.1:$port" ;;
    install) install ;;
    *) echo "usage: scripts/kafka.sh start [sqlite|memory] | stop | restart | status | topic NAME PARTITIONS" >&2; exit 2 ;;
esac
