#!/usr/bin/env bash
# Installs (when missing) and runs a ClickHouse server for chatflow on 127.0.0.1.
#
# Usage: scripts/clickhouse.sh start | stop | restart | status | client [ARGS...]
#
#   CLICKHOUSE_PORT (default 8123, HTTP) and CLICKHOUSE_DIR (default target/clickhouse-$PORT)
#   choose where it listens and keeps its data; the native protocol listens on
#   CLICKHOUSE_TCP_PORT (default PORT+877: 9000 for the default). CLICKHOUSE_HTTPS_PORT with CLICKHOUSE_CERT and CLICKHOUSE_KEY
#   (PEM files: the server's certificate chain and its private key) also serve HTTPS. The install is `apt-get install -y clickhouse-server
#   clickhouse-client` (Debian 12 ships 18.16.1), skipped when clickhouse-server is present.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${CLICKHOUSE_PORT:-8123}
tcp_port=${CLICKHOUSE_TCP_PORT:-$((port + 877))}
dir=${CLICKHOUSE_DIR:-target/clickhouse-$port}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
server=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)

install() {
    if [ ! -x "$server" ]; then
        echo "clickhouse.sh: installing clickhouse-server and clickhouse-client (apt-get)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clickhouse-server clickhouse-client >&2
        server=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
    fi
}

# shellcheck source=lib/pidfile.sh
. scripts/lib/pidfile.sh  # (the working directory is the checkout)

answering() {
    # The HTTP interface answers "Ok." on /ping once the server is ready.
    local reply
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /ping HTTP/1.0\r\n\r\n' >&3 && timeout 2 cat <&3) 2>/dev/null || true)
    [[ "$reply" == *"Ok."* ]]
}

# The HTTPS listener, when CLICKHOUSE_HTTPS_PORT is set.
https_config() {
    [ -n "${CLICKHOUSE_HTTPS_PORT:-}" ] || return 0
    local cert key
    cert=$(realpath "${CLICKHOUSE_CERT:?CLICKHOUSE_HTTPS_PORT needs CLICKHOUSE_CERT}")
    key=$(realpath "${CLICKHOUSE_KEY:?CLICKHOUSE_HTTPS_PORT needs CLICKHOUSE_KEY}")
    cat <<XML
    <https_port>$CLICKHOUSE_HTTPS_PORT</https_port>
    <openSSL>
        <server>
            <certificateFile>$cert</certificateFile>
            <privateKeyFile>$key</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
XML
}

write_config() {
    mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
    cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/server.log</log>
        <errorlog>$dir/log/server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>536870912</mark_cache_size>
    <uncompressed_cache_size>536870912</uncompressed_cache_size>
$(https_config)
</yandex>
XML
    cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML
}

# ext4 without a journal (as some virtual machines' disks are made) skips every recently
# deleted inode when it allocates one, and the server creates a dozen files per insert and
# deletes them after each merge: on such a disk that scan took a third of the server's CPU
# under a live load. Says so when the data directory is on one.
journal_warning() {
    local source fstype dev
    read -r source fstype < <(findmnt -n -o SOURCE,FSTYPE -T "$dir" 2>/dev/null) || return 0
    dev=${source##*/}
    [ "$fstype" = ext4 ] && [ -d "/proc/fs/ext4/$dev" ] || return 0
    compgen -G "/proc/fs/jbd2/$dev-*" >/dev/null && return 0
    echo "clickhouse.sh: $dir is on ext4 without a journal ($source): creating the server's files costs" \
        "it much CPU there; CLICKHOUSE_DIR can put its data on another filesystem (tmpfs, a journaled one)" >&2
}

start() {
    install
    journal_warning
    if running; then
        echo "clickhouse.sh: server already running on 127.0.0.1:$port (pid $(cat "$dir/pid"))"
        return 0
    fi
    write_config
    (
        cd "$dir"
        nohup "$server" --config-file="$dir/config.xml" >>"$dir/log/stdout.log" 2>&1 &
        echo $! >pid
    )
    await_server "clickhouse.sh: server on 127.0.0.1:$port (HTTP), data in $dir" 30 answering \
        "$dir/log/stdout.log" "$dir/log/server.err.log"
}

stop() {
    stop_server "clickhouse.sh: server on 127.0.0.1:$port" 15
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status)
        if running && answering; then echo "clickhouse.sh: running on 127.0.0.1:$port"; else echo "clickhouse.sh: not running"; exit 1; fi ;;
    client) shift; exec clickhouse-client --host 127.0.0.1 --port "$tcp_port" "$@" ;;
    install) install ;;
    *) echo "usage: scripts/clickhouse.sh start | stop | restart | status | client [ARGS...]" >&2; exit 2 ;;
esac
