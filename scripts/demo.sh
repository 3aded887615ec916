#!/usr/bin/env bash
# The main-job demo: installs what is needed, builds pgarc, starts a throwaway PostgreSQL
# (127.0.0.1 and a private unix socket, a free port; as the unprivileged user `nobody` when run
# as root), loads the sample database (fixtures/sql), writes a directory-format archive of it,
# and shows its table of contents with `pgarc list`. Everything is removed at the end.
#
# Until `pgarc dump` lands (issue 3) the archive is written by stock pg_dump; the demo then
# becomes dump, verify, restore.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1; then export PATH="$HOME/.cargo/bin:$PATH"; fi
cargo build --release --locked --quiet
pgarc="$PWD/target/release/pgarc"

bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
work=$(mktemp -d /tmp/pgarc-demo.XXXXXX)
chmod 755 "$work"
as_server=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody: "$work"
  as_server=(runuser -u nobody --)
fi
stop() {
  "${as_server[@]}" "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap stop EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_server[@]}" "$bindir/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --locale=C -N >/dev/null
"${as_server[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $work" start >/dev/null
export PGHOST="$work" PGPORT="$port" PGUSER=postgres
echo "== throwaway PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on port $port"

"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -d postgres -f fixtures/sql/roles.sql
"$bindir/createdb" demo
"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -d demo -f fixtures/sql/fixtures.sql >/dev/null
echo "== sample database 'demo' loaded: $("$bindir/psql" -X -A -t -d demo -c \
  "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname IN ('app', 'Mixed Schema') AND c.relkind IN ('r', 'p')") tables"

"$bindir/pg_dump" -Fd -j 2 -d demo -f "$work/archive"
echo "== pg_dump -Fd wrote $work/archive; pgarc list:"
"$pgarc" list "$work/archive"
echo "== pgarc list and pg_restore -l agree on every entry line:"
diff <("$pgarc" list "$work/archive" | grep -v '^;') \
     <("$bindir/pg_restore" -l "$work/archive" | grep -v '^;') && echo "identical"
