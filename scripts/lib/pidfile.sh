# Shared by scripts/kafka.sh and scripts/clickhouse.sh: a server started in the background
# with its pid in "$dir/pid".

# Whether the server of "$dir/pid" is running.
running() {
    [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null
}

# stop_server WHAT SECONDS: SIGTERM, up to SECONDS for it to exit, then SIGKILL; says WHAT stopped.
stop_server() {
    local what=$1 seconds=$2
    if running; then
        local pid
        pid=$(cat "$dir/pid")
        kill "$pid"
        for _ in $(seq 1 $((seconds * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        echo "$what stopped"
    fi
    rm -f "$dir/pid"
}
