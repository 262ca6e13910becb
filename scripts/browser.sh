#!/usr/bin/env bash
# Installs (when missing) and runs a WebDriver server for headless Chromium on 127.0.0.1, for
# the dashboard's browser tests (tests/it/browser.rs).
#
# Usage: scripts/browser.sh start | stop | restart | status | install
#
#   CHROMEDRIVER_PORT (default 9515) and CHROMEDRIVER_DIR (default target/chromedriver-$PORT)
#   choose where it listens and keeps its log. The install is `apt-get install -y chromium
#   chromium-driver` (Debian), skipped when both are present. The tests open their own
#   sessions on it, headless, with the flags in tests/it/browser.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${CHROMEDRIVER_PORT:-9515}
dir=${CHROMEDRIVER_DIR:-target/chromedriver-$port}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

find_tools() {
    driver=$(command -v chromedriver || echo /usr/bin/chromedriver)
    browser=$(command -v chromium || command -v chromium-browser || echo /usr/bin/chromium)
}
find_tools

install() {
    if [ ! -x "$driver" ] || [ ! -x "$browser" ]; then
        echo "browser.sh: installing chromium and chromium-driver (apt-get)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >&2
        find_tools
    fi
}

# shellcheck source=lib/pidfile.sh
. scripts/lib/pidfile.sh  # (the working directory is the checkout)

answering() {
    # chromedriver answers GET /status with {"value":{"ready":true,...}}.
    local reply
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 && timeout 2 cat <&3) 2>/dev/null || true)
    [[ "$reply" == *'"ready":true'* ]]
}

start() {
    install
    if running; then
        echo "browser.sh: chromedriver already running on 127.0.0.1:$port (pid $(cat "$dir/pid"))"
        return 0
    fi
    (
        cd "$dir"
        nohup "$driver" --port="$port" --allowed-ips=127.0.0.1 --log-path="$dir/chromedriver.log" \
            >>"$dir/stdout.log" 2>&1 &
        echo $! >pid
    )
    await_server "browser.sh: chromedriver on 127.0.0.1:$port ($("$browser" --version 2>/dev/null || echo chromium))" \
        30 answering "$dir/stdout.log" "$dir/chromedriver.log"
    echo "$browser" >"$dir/browser"
}

stop() {
    stop_server "browser.sh: chromedriver on 127.0.0.1:$port" 10
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status)
        if running && answering; then echo "browser.sh: chromedriver running on 127.0.0.1:$port"; else echo "browser.sh: not running"; exit 1; fi ;;
    install) install ;;
    *) echo "usage: scripts/browser.sh start | stop | restart | status | install" >&2; exit 2 ;;
esac
