#!/usr/bin/env bash
# A throwaway PostgreSQL server for the service's tests and benchmark (Debian's postgresql).
#
#   .ci/postgres.sh start [DIR]   install if missing (apt-get), initdb into DIR (default: a new
#                                 temp dir), start on a free loopback port, print the URL on stdout
#   .ci/postgres.sh stop DIR      stop the server started in DIR and delete DIR
#
# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user.
# PROPENSITY_PG_INSTALL=0 forbids the apt-get step (the test fixture sets it: a test never installs).
set -euo pipefail

find_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z "$found" ]] && command -v initdb >/dev/null 2>&1; then
    found=$(dirname "$(command -v initdb)")
  fi
  echo "$found"
}

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-start}
case "$cmd" in
  start)
    bin=$(find_bin)
    if [[ -z "$bin" ]]; then
      if [[ "${PROPENSITY_PG_INSTALL:-1}" == "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "postgres.sh: PostgreSQL is not installed (and installing is not allowed here)" >&2
        exit 3
      fi
      export DEBIAN_FRONTEND=noninteractive
      (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) >&2
      bin=$(find_bin)
    fi
    dir=${2:-$(mktemp -d /tmp/propensity-pg.XXXXXX)}
    mkdir -p "$dir"
    if [[ $(id -u) -eq 0 ]]; then
      chown postgres "$dir"
      runuser -u postgres -- test -x "$dir" \
        || { echo "postgres.sh: the postgres user cannot reach $dir (use a dir directly under /tmp)" >&2; exit 1; }
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=50" start >&2 \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir=${2:?usage: postgres.sh stop DIR}
    bin=$(find_bin)
    if [[ -n "$bin" && -d "$dir/data" ]]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start [DIR] | stop DIR" >&2
    exit 2
    ;;
esac
