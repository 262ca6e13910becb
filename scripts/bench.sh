#!/usr/bin/env bash
# The standard benchmark inputs and runs behind the figures in the README:
#   1. a generated 1,000,000-message fixture (seed 42), with -w 1 and -w 2;
#   2. the real Twitch chat CSV logs (../shared/data/twitch-chat-csv), imported, -w 1 and -w 2.
# Prints one JSON object per run (chatflow bench). Fixtures go to target/bench/.
#
# Usage: scripts/bench.sh [extra chatflow bench flags, e.g. --batch 50000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin=target/release/chatflow
mkdir -p target/bench
fixture=target/bench/chat-1m-seed42.jsonl
[ -f "$fixture" ] || "$bin" produce --out-file "$fixture" --count 1000000 --seed 42
inputs=("$fixture")
if [ -d ../shared/data/twitch-chat-csv ]; then
    real=target/bench/twitch-chat-csv.jsonl
    [ -f "$real" ] || "$bin" import --from twitch-csv --out-file "$real" ../shared/data/twitch-chat-csv/*.csv
    inputs+=("$real")
else
    echo "bench.sh: ../shared/data/twitch-chat-csv absent; benchmarking the generated fixture only" >&2
fi
for input in "${inputs[@]}"; do
    for w in 1 2; do
        "$bin" bench --replay "$input" -w "$w" "$@"
    done
done
