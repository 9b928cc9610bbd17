#!/usr/bin/env bash
# Starts the services Troupe's distributed mode and its tests use, on 127.0.0.1
# only, when they are not already running (idempotent):
#
#   Redis       127.0.0.1:6379   no persistence (a test bus, not a data store)
#   PostgreSQL  127.0.0.1:5432   trust auth for local connections, user postgres,
#                                database `test` (TROUPE_TEST_POSTGRES_URL's default)
#
# What answers already is left alone. What is missing is installed with apt-get
# (Debian/Ubuntu: redis-server, postgresql) and started in the background; a
# PostgreSQL started here gets its own cluster under $TROUPE_HOME/postgres
# (default ~/.cache/troupe/postgres), created with `initdb -A trust`. No systemd
# is needed. Logs go to $TROUPE_HOME/logs.
set -euo pipefail

TROUPE_HOME="${TROUPE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/troupe}"
REDIS_PORT="${TROUPE_REDIS_PORT:-6379}"
PG_PORT="${TROUPE_POSTGRES_PORT:-5432}"
LOGS="$TROUPE_HOME/logs"

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif have sudo; then sudo "$@"
    else die "need root to run: $*"; fi
}

apt_install() {
    have apt-get || die "$* missing and apt-get is not available: install them yourself"
    say "installing $*"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
    fi
}

# Waits up to $2 seconds for `$1` (a command) to succeed.
wait_for() {
    local check="$1" secs="$2" i
    for ((i = 0; i < secs * 10; i++)); do
        if eval "$check" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

mkdir -p "$LOGS"

# openssl makes the certificates of the Redis TLS test.
if ! have openssl; then apt_install openssl; fi

# --- Redis -----------------------------------------------------------------
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

if have redis-cli && redis_up; then
    say "Redis: running on 127.0.0.1:$REDIS_PORT ($(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | tr -d '\r' | grep '^redis_version' | cut -d: -f2))"
else
    if ! have redis-server || ! have redis-cli; then apt_install redis-server redis-tools; fi
    if port_open "$REDIS_PORT"; then die "127.0.0.1:$REDIS_PORT is taken by something that is not Redis"; fi
    say "Redis: starting on 127.0.0.1:$REDIS_PORT"
    mkdir -p "$TROUPE_HOME/redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$TROUPE_HOME/redis" --logfile "$LOGS/redis.log"
    wait_for redis_up 10 || die "Redis did not answer within 10 s; see $LOGS/redis.log"
    say "Redis: up"
fi

# --- PostgreSQL --------------------------------------------------------------
pg_up() { have pg_isready && pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }

pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
    done
    return 1
}

if ! pg_up; then
    if ! pg_bin >/dev/null; then apt_install postgresql postgresql-client; fi
    BIN="$(pg_bin)" || die "PostgreSQL's initdb not found after installing"
    if port_open "$PG_PORT"; then die "127.0.0.1:$PG_PORT is taken by something that is not PostgreSQL"; fi
    DATA="$TROUPE_HOME/postgres"
    # initdb and postgres refuse to run as root: use the postgres account then.
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "no postgres user to run PostgreSQL as"
        RUN=(runuser -u postgres --)
        mkdir -p "$DATA" && chown postgres: "$DATA"
        # The account must be able to reach the data directory.
        chmod o+x "$TROUPE_HOME" "$(dirname "$TROUPE_HOME")" 2>/dev/null || true
        touch "$LOGS/postgres.log" && chown postgres: "$LOGS/postgres.log"
    else
        RUN=()
        mkdir -p "$DATA"
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        say "PostgreSQL: creating a cluster in $DATA (trust auth, user postgres)"
        ${RUN[@]+"${RUN[@]}"} "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 >/dev/null
    fi
    say "PostgreSQL: starting on 127.0.0.1:$PG_PORT"
    ${RUN[@]+"${RUN[@]}"} "$BIN/pg_ctl" -D "$DATA" -l "$LOGS/postgres.log" -w -t 30 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null
    wait_for pg_up 30 || die "PostgreSQL did not answer within 30 s; see $LOGS/postgres.log"
fi
if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc "select 1" >/dev/null 2>&1; then
    die "PostgreSQL on 127.0.0.1:$PG_PORT refuses user postgres without a password; set TROUPE_TEST_POSTGRES_URL to a URL that works"
fi
if [ "$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc "select 1 from pg_database where datname = 'test'")" != "1" ]; then
    say "PostgreSQL: creating database test"
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "create database test" >/dev/null
fi
say "PostgreSQL: running on 127.0.0.1:$PG_PORT ($(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d test -Atqc 'show server_version'))"
