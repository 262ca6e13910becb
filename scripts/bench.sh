#!/usr/bin/env bash
# The standard benchmark inputs and runs behind the figures in the README:
#   1. a generated 1,000,000-message fixture (seed 42), with -w 1 and -w 2;
#   2. the real Twitch chat CSV logs (../shared/data/twitch-chat-csv), imported, -w 1 and -w 2;
#   3. the generated fixture with the sentiment lexica (--lexicon-dir), -w 1 and -w 2;
#   4. a generated 1,000,000-post fixture (seed 42) through the post views, -w 1 and -w 2.
# Prints one JSON object per run (chatflow bench). Fixtures go to target/bench/.
#
# `scripts/bench.sh kafka` runs the Kafka benchmarks instead, on brokers of their own
# (127.0.0.1:9094 and 9095, data under target/bench/):
#   1. the same 1,000,000 messages pre-loaded into a 4-partition topic (sqlite storage), read
#      to the CSV sink with --until-caught-up, -w 1 and -w 2;
#   2. freshness (produce → written): `chatflow produce --rate 50000` for 30 s into a memory
#      broker while `chatflow run -w 2 --tick-ms 100` reads it; the run prints p50/p99.
#
# `scripts/bench.sh clickhouse` runs the ClickHouse benchmarks (the server of
# scripts/clickhouse.sh, started when not running; a memory broker on 127.0.0.1:9095):
#   1. the 1,000,000-message fixture into ClickHouse with -w 1 and -w 2 (rows/s = the sum of
#      rows_written over seconds), then the tables' sizes on disk;
#   2. freshness (produce → recorded at the worker's progress, i.e. visible at its upper) at
#      50,000 messages/s for 30 s, chatflow run -w 2 --tick-ms 100 from Kafka into ClickHouse.
#
# Usage: scripts/bench.sh [kafka|clickhouse] [extra chatflow bench flags, e.g. --batch 50000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin=target/release/chatflow
mkdir -p target/bench
fixture=target/bench/chat-1m-seed42.jsonl
[ -f "$fixture" ] || "$bin" produce --out "$fixture" --count 1000000 --seed 42

# Freshness at a steady 50,000 messages/s for 30 s through a memory broker on 127.0.0.1:9095:
# `freshness NAME [extra chatflow run flags]` (the log goes to target/bench/NAME.log).
freshness() {
    local name=$1
    shift
    local only_chat=(--edges-topic "" --posts-topic "" --viewers-topic "")
    export KAFKA_PORT=9095 KAFKA_DIR=target/bench/kafka-9095
    scripts/kafka.sh stop >/dev/null 2>&1 || true
    rm -rf "$KAFKA_DIR" "target/bench/$name"
    trap 'KAFKA_PORT=9095 KAFKA_DIR=target/bench/kafka-9095 scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
    scripts/kafka.sh start memory
    "$bin" produce --kafka 127.0.0.1:9095 --count 1 --partitions 4 "${only_chat[@]}" >/dev/null
    "$bin" run --kafka 127.0.0.1:9095 -w 2 --tick-ms 100 --idle-ms 100 --out "target/bench/$name" "${only_chat[@]}" "$@" \
        >"target/bench/$name.log" 2>&1 &
    local run=$!
    sleep 2
    timeout -s INT 30 "$bin" produce --kafka 127.0.0.1:9095 --rate 50000 "${only_chat[@]}" || true
    sleep 3
    kill -TERM "$run"
    wait "$run"
    grep -E "events read|freshness" "target/bench/$name.log"
}

if [ "${1:-}" = clickhouse ]; then
    shift
    scripts/clickhouse.sh start
    url=http://127.0.0.1:8123
    for w in 1 2; do
        "$bin" bench --replay "$fixture" -w "$w" --clickhouse "$url" --database "bench_w$w" "$@"
    done
    curl -s "$url/" --data-binary "SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes_on_disk, \
        sum(data_uncompressed_bytes) AS uncompressed FROM system.parts WHERE database = 'bench_w2' AND active \
        GROUP BY table ORDER BY table FORMAT TabSeparatedWithNames"
    freshness fresh-ch --clickhouse "$url" --database bench_fresh --from-beginning
    exit 0
fi

if [ "${1:-}" = kafka ]; then
    shift
    only_chat=(--edges-topic "" --posts-topic "" --viewers-topic "")
    export KAFKA_PORT=9094 KAFKA_DIR=target/bench/kafka-9094
    scripts/kafka.sh stop >/dev/null 2>&1 || true
    rm -rf "$KAFKA_DIR"
    trap 'KAFKA_PORT=9094 KAFKA_DIR=target/bench/kafka-9094 scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
    scripts/kafka.sh start sqlite
    "$bin" produce --kafka 127.0.0.1:9094 --from "$fixture" --partitions 4 "${only_chat[@]}"
    for w in 1 2; do
        "$bin" bench --kafka 127.0.0.1:9094 --until-caught-up -w "$w" "${only_chat[@]}" "$@"
    done
    scripts/kafka.sh stop
    freshness fresh
    exit 0
fi
inputs=("$fixture")
if [ -d ../shared/data/twitch-chat-csv ]; then
    real=target/bench/twitch-chat-csv.jsonl
    [ -f "$real" ] || "$bin" import --from twitch-csv --out "$real" ../shared/data/twitch-chat-csv/*.csv
    inputs+=("$real")
else
    echo "bench.sh: ../shared/data/twitch-chat-csv absent; benchmarking the generated fixture only" >&2
fi
for input in "${inputs[@]}"; do
    for w in 1 2; do
        "$bin" bench --replay "$input" -w "$w" "$@"
    done
done
# Sentiment on: the generated fixture again with the lexica (when the shared data is there).
lexica=../shared/data/twitch-chat-sentiment/lexica
if [ -d "$lexica" ]; then
    for w in 1 2; do
        "$bin" bench --replay "$fixture" -w "$w" --lexicon-dir "$lexica" "$@"
    done
fi
# Posts: a generated 1,000,000-post fixture (seed 42) through the post views.
posts=target/bench/posts-1m-seed42.jsonl
[ -f "$posts" ] || "$bin" produce --kind posts --out "$posts" --count 1000000 --seed 42
for w in 1 2; do
    "$bin" bench --replay "$posts" -w "$w" "$@"
done
