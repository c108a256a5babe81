#!/usr/bin/env bash
# A pg_auto_failover formation on this one machine, for failover tests: a monitor, a primary and
# a synchronous secondary, each with its own port and data folder under DIR, trust auth on
# 127.0.0.1, a database `crm`.
#
#   formation.sh start      [DIR]  create (or restart) the formation, wait for primary + secondary,
#                                  print the multi-host URL on stdout
#   formation.sh stop       [DIR]  stop the three pg_autoctl services (data stays in DIR)
#   formation.sh status     [DIR]  the monitor's view and the replication settings; exit 1 when
#                                  the formation is not primary + secondary
#   formation.sh url        [DIR]  print the multi-host URL
#   formation.sh switchover [DIR]  a planned switchover (pg_autoctl perform switchover)
#   formation.sh events     [DIR]  the monitor's last 60 events (pg_autoctl show events)
#
# DIR defaults to /tmp/opportunity-failover. Ports: FAILOVER_PORT (default 55432) for the
# monitor, +1 for node1, +2 for node2. Installs nothing: needs `pg_autoctl` (Debian package
# postgresql-15-auto-failover) and PostgreSQL 15's server binaries. Runs pg_autoctl as the
# `postgres` OS user (from root through runuser, or directly as postgres).
set -euo pipefail

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd="${1:-}"
[ -n "$cmd" ] || usage
DIR="${2:-/tmp/opportunity-failover}"
case "$DIR" in
    /*) ;;
    *) DIR="$PWD/$DIR" ;;
esac
PORT="${FAILOVER_PORT:-55432}"
MONITOR_PORT="$PORT"
NODE1_PORT="$((PORT + 1))"
NODE2_PORT="$((PORT + 2))"
HOST=127.0.0.1
DB=crm
PG_BINDIR="${PG_BINDIR:-/usr/lib/postgresql/15/bin}"
# Bounds of every wait, in seconds.
START_TIMEOUT="${FAILOVER_START_TIMEOUT:-180}"

URL="postgres://postgres@${HOST}:${NODE1_PORT},${HOST}:${NODE2_PORT}/${DB}?target_session_attrs=read-write"
MONITOR_URL="postgres://autoctl_node@${HOST}:${MONITOR_PORT}/pg_auto_failover?sslmode=disable"

log() { printf '[formation %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

find_pg_autoctl() {
    if command -v pg_autoctl >/dev/null 2>&1; then
        command -v pg_autoctl
    elif [ -x "$PG_BINDIR/pg_autoctl" ]; then
        echo "$PG_BINDIR/pg_autoctl"
    else
        die "pg_autoctl not found on PATH nor in $PG_BINDIR: apt-get install -y postgresql-15-auto-failover"
    fi
}
PG_AUTOCTL="$(find_pg_autoctl)"
[ -x "$PG_BINDIR/pg_ctl" ] || die "$PG_BINDIR/pg_ctl not found (PostgreSQL 15 server binaries; set PG_BINDIR)"
PG_CTL="$PG_BINDIR/pg_ctl"
PSQL="$PG_BINDIR/psql"
[ -x "$PSQL" ] || PSQL="$(command -v psql || die "psql not found")"

# pg_autoctl keeps its config, state and pid files under the XDG folders: keep them in DIR, so
# that formations in different folders never meet.
as_postgres() {
    local env=(env "XDG_CONFIG_HOME=$DIR/config" "XDG_DATA_HOME=$DIR/share" "XDG_RUNTIME_DIR=$DIR/run"
        "PATH=$PG_BINDIR:/usr/local/bin:/usr/bin:/bin")
    if [ "$(id -un)" = postgres ]; then
        (cd "$DIR" && "${env[@]}" "$@")
    elif [ "$(id -u)" = 0 ]; then
        (cd "$DIR" && runuser -u postgres -- "${env[@]}" "$@")
    else
        die "run as root or as the postgres user"
    fi
}

autoctl() { as_postgres "$PG_AUTOCTL" "$@"; }

sql() { # port dbname query
    "$PSQL" -X -q -At -h "$HOST" -p "$1" -U postgres -d "$2" -c "$3"
}

# Whether the pg_autoctl service of a node (its data folder) runs.
running() { autoctl status --pgdata "$DIR/$1" >/dev/null 2>&1; }

# Starts `pg_autoctl run` (or a create with --run) for a node in the background, detached.
launch() { # name args...
    local name="$1"
    shift
    log "starting $name (log: $DIR/log/$name.log)"
    as_postgres setsid "$PG_AUTOCTL" "$@" >>"$DIR/log/$name.log" 2>&1 </dev/null &
}

wait_for() { # what seconds command...
    local what="$1" seconds="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what: not reached within ${seconds} s (logs in $DIR/log)"
        sleep 0.5
    done
}

state_table() { autoctl show state --pgdata "$DIR/monitor" 2>/dev/null; }

# Both nodes report their goal state: one primary, one secondary.
formation_ready() {
    local table
    table="$(state_table)" || return 1
    grep -Eq '\|[[:space:]]*primary[[:space:]]*\|[[:space:]]*primary[[:space:]]*$' <<<"$table" \
        && grep -Eq '\|[[:space:]]*secondary[[:space:]]*\|[[:space:]]*secondary[[:space:]]*$' <<<"$table"
}

node1_single() { state_table | grep -Eq 'single[[:space:]]*\|[[:space:]]*single[[:space:]]*$'; }

# The primary has the secondary as its synchronous standby.
sync_ready() {
    local port
    for port in "$NODE1_PORT" "$NODE2_PORT"; do
        if [ "$(sql "$port" postgres 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then
            [ -n "$(sql "$port" postgres 'SHOW synchronous_standby_names')" ] \
                && sql "$port" postgres "SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')" \
                | grep -q 1
            return
        fi
    done
    return 1
}

create_node() { # name port
    local name="$1" port="$2"
    launch "$name" create postgres --pgdata "$DIR/$name" --pgport "$port" --pghost "$HOST" --listen "$HOST" \
        --hostname "$HOST" --name "$name" --dbname "$DB" --username postgres --auth trust --no-ssl \
        --pgctl "$PG_CTL" --monitor "$MONITOR_URL" --run
}

start() {
    mkdir -p "$DIR/log" "$DIR/run"
    chmod 0700 "$DIR/run"
    [ "$(id -u)" != 0 ] || chown -R postgres: "$DIR"

    if [ ! -f "$DIR/monitor/PG_VERSION" ]; then
        log "creating the monitor on port $MONITOR_PORT"
        autoctl create monitor --pgdata "$DIR/monitor" --pgport "$MONITOR_PORT" --hostname "$HOST" \
            --auth trust --no-ssl --pgctl "$PG_CTL" >>"$DIR/log/monitor.log" 2>&1
        # pg_autoctl starts Postgres with `-h <listen_addresses>`, by default *.
        autoctl config set --pgdata "$DIR/monitor" postgresql.listen_addresses "$HOST" >/dev/null
        # A lost node is failed over in about 3 s instead of the default 50-60 s (health checks
        # every 5 s with 2 retries, a node unhealthy after 20 s without a report, then 30 s for
        # the lost primary to demote itself): the failover test measures the service, not the
        # monitor's patience. A test rig on one machine: no slow network to mistake for a lost
        # node, and the lost primary is dead (in production, keep primary_demote_timeout above
        # the keepers' network_partition_timeout, 20 s, so that a cut-off primary has stopped
        # writing before the secondary is promoted).
        cat >>"$DIR/monitor/postgresql.conf" <<EOF_CONF

# formation.sh: fast failure detection for the failover test
pgautofailover.health_check_period = 500
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 200
pgautofailover.node_considered_unhealthy_timeout = 1000
pgautofailover.primary_demote_timeout = 1000
EOF_CONF
    fi
    running monitor || launch monitor run --pgdata "$DIR/monitor"
    wait_for "the monitor answers on $MONITOR_PORT" 60 sql "$MONITOR_PORT" pg_auto_failover 'SELECT 1'

    if [ ! -d "$DIR/node1" ]; then
        log "creating node1 (primary) on port $NODE1_PORT"
        create_node node1 "$NODE1_PORT"
        wait_for "node1 is single" "$START_TIMEOUT" node1_single
        wait_for "database $DB on node1" 60 sql "$NODE1_PORT" "$DB" 'SELECT 1'
        # pg_basebackup of node2 asks for a spread checkpoint (minutes on an idle server): write
        # the dirty pages now so that it has nothing left to spread.
        sql "$NODE1_PORT" postgres 'CHECKPOINT'
    elif ! running node1; then
        launch node1 run --pgdata "$DIR/node1"
    fi

    if [ ! -d "$DIR/node2" ]; then
        log "creating node2 (secondary) on port $NODE2_PORT"
        create_node node2 "$NODE2_PORT"
    elif ! running node2; then
        launch node2 run --pgdata "$DIR/node2"
    fi

    wait_for "primary + secondary" "$START_TIMEOUT" formation_ready
    wait_for "synchronous replication to the secondary" 60 sync_ready
    log "ready"
    status >&2
    echo "$URL"
}

stop() {
    local name pid
    [ -d "$DIR" ] || {
        log "no formation in $DIR"
        return 0
    }
    for name in node2 node1 monitor; do
        if [ -d "$DIR/$name" ] && running "$name"; then
            log "stopping $name"
            autoctl stop --pgdata "$DIR/$name" --fast || true
        fi
    done
    for name in node2 node1 monitor; do
        [ -d "$DIR/$name" ] || continue
        local deadline=$((SECONDS + 60))
        while running "$name"; do
            [ "$SECONDS" -lt "$deadline" ] || {
                log "WARNING: $name still runs after 60 s; sending SIGKILL"
                pid="$(autoctl show file --pgdata "$DIR/$name" --pid 2>/dev/null | xargs -r head -1 2>/dev/null || true)"
                [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
                break
            }
            sleep 0.5
        done
        if [ -f "$DIR/$name/postmaster.pid" ]; then
            pid="$(head -1 "$DIR/$name/postmaster.pid")"
            if kill -0 "$pid" 2>/dev/null; then
                log "stopping the postgres of $name (pid $pid)"
                as_postgres "$PG_CTL" stop --pgdata "$DIR/$name" --mode fast --wait -t 30 >/dev/null 2>&1 \
                    || kill -9 "$pid" 2>/dev/null || true
            fi
        fi
    done
    log "stopped"
}

status() {
    [ -d "$DIR/monitor" ] || die "no formation in $DIR"
    local port rc=0
    echo "formation in $DIR: monitor $HOST:$MONITOR_PORT, node1 $HOST:$NODE1_PORT, node2 $HOST:$NODE2_PORT"
    state_table || {
        echo "the monitor does not answer"
        return 1
    }
    autoctl show settings --pgdata "$DIR/monitor" 2>/dev/null || true
    for port in "$NODE1_PORT" "$NODE2_PORT"; do
        if [ "$(sql "$port" postgres 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then
            echo "primary $HOST:$port: synchronous_standby_names = '$(sql "$port" postgres 'SHOW synchronous_standby_names')'"
            echo "primary $HOST:$port: pg_stat_replication (application_name|state|sync_state):"
            sql "$port" postgres 'SELECT application_name, state, sync_state FROM pg_stat_replication' | sed 's/^/  /'
        fi
    done
    echo "url: $URL"
    formation_ready || {
        echo "not ready: the formation is not primary + secondary"
        rc=1
    }
    return "$rc"
}

switchover() {
    [ -d "$DIR/monitor" ] || die "no formation in $DIR"
    autoctl perform switchover --pgdata "$DIR/monitor" --formation default --group 0 --wait 60
}

events() {
    [ -d "$DIR/monitor" ] || die "no formation in $DIR"
    autoctl show events --pgdata "$DIR/monitor" --formation default --count 60
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) echo "$URL" ;;
    switchover) switchover ;;
    events) events ;;
    *) usage ;;
esac
