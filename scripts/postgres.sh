# Sourced by scripts/test and scripts/bench: `start_postgres PORT [SERVER OPTIONS...]` starts a
# throw-away PostgreSQL cluster on 127.0.0.1:PORT (installing PostgreSQL with apt-get when
# missing), removes it on exit, and sets PG_URL to its `postgres` database.

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

find_pg_bin() {
  local candidate
  candidate=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$candidate" ] && [ -x "$candidate/initdb" ]; then echo "$candidate"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; fi
}

start_postgres() {
  local port="$1"; shift
  local dir="${TMPDIR:-/tmp}/creditbook-pg-${port}"
  local bin=""
  bin=$(find_pg_bin)
  if [ -z "$bin" ]; then
    echo "PostgreSQL is not installed; installing it with apt-get" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    bin=$(find_pg_bin)
  fi
  [ -n "$bin" ] || { echo "could not find PostgreSQL's initdb after installing" >&2; exit 1; }
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir "$dir" --shell /usr/sbin/nologin postgres
  fi
  # A fresh cluster every run, removed on exit: nothing carries over between runs.
  if [ -f "$dir/postmaster.pid" ]; then
    as_postgres "$bin/pg_ctl" -D "$dir" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
  as_postgres "$bin/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
  as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 $*" >/dev/null
  PG_BIN="$bin"
  PG_DIR="$dir"
  trap 'as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
  PG_URL="postgres://postgres@127.0.0.1:${port}/postgres"
  echo "PostgreSQL ($bin) on port $port" >&2
}
