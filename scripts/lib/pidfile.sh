# Shared by scripts/kafka.sh, scripts/clickhouse.sh and scripts/browser.sh: a server started in the background
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

# await_server WHAT SECONDS READY LOG...: waits until the command READY succeeds (then says
# WHAT started) or the server exits (then shows the tail of the LOG files and fails), for up
# to SECONDS.
await_server() {
    local what=$1 seconds=$2 ready=$3
    shift 3
    for _ in $(seq 1 $((seconds * 10))); do
        if "$ready"; then
            echo "$what"
            return 0
        fi
        if ! running; then
            echo "${what%% *} the server exited; its log:" >&2
            tail -20 "$@" 2>/dev/null >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "${what%% *} the server did not answer within $seconds s" >&2
    exit 1
}
