#!/usr/bin/env bash
# A local PostgreSQL server for the PostgreSQL sink's tests and for trying the sink: the
# Debian postgresql package's binaries, one cluster of our own (not the package's
# "main" cluster), listening on 127.0.0.1 only, with trust authentication.
#
#   scripts/postgres.sh install install postgresql with apt-get if initdb is missing (the
#                               sink tests then start a throwaway cluster of their own)
#   scripts/postgres.sh up      install postgresql with apt-get if initdb is missing,
#                               create the cluster once, start it, create database
#                               gonomaly; prints the URL (GONOMALY_POSTGRES_URL) on stdout
#   scripts/postgres.sh url     print the URL
#   scripts/postgres.sh status  say whether it runs (exit 0) or not (exit 3)
#   scripts/postgres.sh down    stop it (fast shutdown); the data stays for the next up
#   scripts/postgres.sh purge   stop it and delete the cluster
#
# Usage: export GONOMALY_POSTGRES_URL=$(scripts/postgres.sh up)
#
# Environment:
#   PG_PORT                 TCP port on 127.0.0.1 (default 15432)
#   GONOMALY_POSTGRES_DIR   the cluster's directory (default
#                           ${XDG_CACHE_HOME:-~/.cache}/gonomaly/postgres; when running
#                           as root and the postgres user cannot reach that directory,
#                           as under a 0700 /root, /var/tmp/gonomaly-postgres instead)
#   PG_BIN                  directory of initdb and pg_ctl (default: the newest
#                           /usr/lib/postgresql/*/bin, else PATH)
#   PG_UP_TIMEOUT           seconds to wait for the server (default 60)
set -euo pipefail

PG_PORT=${PG_PORT:-15432}
PG_UP_TIMEOUT=${PG_UP_TIMEOUT:-60}
DB=gonomaly
URL="postgres://postgres@127.0.0.1:$PG_PORT/$DB?sslmode=disable"

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# as_pg runs a command as the cluster's owner: the postgres user when we are root
# (PostgreSQL refuses to run as root), else ourselves.
as_pg() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

find_bin() {
	if [[ -n ${PG_BIN:-} ]]; then
		[[ -x $PG_BIN/initdb ]] || die "PG_BIN=$PG_BIN has no initdb"
		echo "$PG_BIN"
		return
	fi
	local d
	d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	if [[ -n $d && -x $d/initdb ]]; then
		echo "$d"
		return
	fi
	if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
		dirname "$(command -v initdb)"
		return
	fi
	return 1
}

install_pg() {
	local sudo=()
	if ! is_root; then
		command -v sudo >/dev/null || die "initdb not found and not root: install PostgreSQL (apt-get install postgresql) or set PG_BIN"
		sudo=(sudo)
	fi
	log "initdb not found: installing the Debian postgresql package"
	# The package would create and start a "main" cluster on port 5432; we run our own.
	if [[ ! -e /etc/postgresql-common/createcluster.d/gonomaly.conf ]]; then
		"${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
		echo "create_main_cluster = false" | "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/gonomaly.conf >/dev/null
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

# pg_reachable says whether the postgres user can enter dir's nearest existing ancestor
# and everything above it.
pg_reachable() {
	local d=$1
	while [[ ! -e $d ]]; do d=$(dirname "$d"); done
	runuser -u postgres -- test -x "$d" 2>/dev/null
}

pick_dir() {
	if [[ -n ${GONOMALY_POSTGRES_DIR:-} ]]; then
		DIR=$GONOMALY_POSTGRES_DIR
		if is_root && ! pg_reachable "$DIR"; then
			die "GONOMALY_POSTGRES_DIR=$DIR: the postgres user cannot reach it (a parent directory is not searchable)"
		fi
		return
	fi
	DIR=${XDG_CACHE_HOME:-$HOME/.cache}/gonomaly/postgres
	if is_root && ! pg_reachable "$DIR"; then
		DIR=/var/tmp/gonomaly-postgres
	fi
}

pick_dir
DATA=$DIR/data
SOCK=$DIR/run
LOG_FILE=$DIR/server.log

running() {
	local bin
	bin=$(find_bin) || return 1
	[[ -f $DATA/postmaster.pid ]] || return 1
	as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

psql_do() {
	as_pg "$BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}

up() {
	if running; then
		log "already running ($DATA, port $PG_PORT)"
		echo "$URL"
		return 0
	fi
	BIN=$(find_bin) || { install_pg; BIN=$(find_bin) || die "initdb still not found after installing postgresql"; }
	port_open "$PG_PORT" && die "port $PG_PORT is in use by something that is not this cluster (set PG_PORT)"
	mkdir -p "$DIR"
	if is_root; then chown postgres: "$DIR"; fi
	if [[ ! -f $DATA/PG_VERSION ]]; then
		log "creating a cluster in $DATA ($("$BIN/postgres" --version))"
		rm -rf "$DATA"
		as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C -N >"$DIR/initdb.log" 2>&1 ||
			{ cat "$DIR/initdb.log" >&2; die "initdb failed"; }
	fi
	as_pg mkdir -p "$SOCK"
	log "starting on 127.0.0.1:$PG_PORT (log $LOG_FILE)"
	if ! as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG_FILE" -w -t "$PG_UP_TIMEOUT" \
		-o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$SOCK" start >/dev/null; then
		tail -n 40 "$LOG_FILE" >&2 || true
		die "the server did not start"
	fi
	if [[ $(psql_do -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'") != 1 ]]; then
		psql_do -c "CREATE DATABASE $DB"
	fi
	log "up"
	echo "$URL"
}

down() {
	if running; then
		BIN=$(find_bin)
		log "stopping ($DATA)"
		as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
	else
		log "not running"
	fi
}

status() {
	if running; then
		echo "running: $DATA on 127.0.0.1:$PG_PORT, $URL"
		return 0
	fi
	echo "not running"
	return 3
}

case ${1:-} in
install) find_bin >/dev/null || install_pg ;;
up) up ;;
down) down ;;
url) echo "$URL" ;;
status) status ;;
purge)
	down
	rm -rf "$DIR"
	;;
*)
	echo "usage: $0 install|up|down|url|status|purge" >&2
	exit 2
	;;
esac
