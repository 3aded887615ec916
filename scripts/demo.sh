#!/usr/bin/env bash
# The main-job demo: installs what is needed, builds pgarc, starts a throwaway PostgreSQL
# (127.0.0.1 and a private unix socket, a free port; as the unprivileged user `nobody` when run
# as root), loads sample data (the fixtures database plus a 1.5-million-row table), then:
#   1. pgarc dump -j 2 (default zstd), printing its summary;
#   2. checks the archive with pgarc verify, and shows that it names a flipped byte in a copy;
#   3. restores the archive with pgarc restore -j 2 --verify into a new database (which then
#      proves, by content digest, that the database equals the archive), and with stock
#      pg_restore -j 2 into another (no lock-in), and compares every table's row count and
#      content hash in both with the source;
#   4. pgarc verify --against the database pg_restore made: equal; then, after one row is
#      changed, the table is named.
# Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1; then export PATH="$HOME/.cargo/bin:$PATH"; fi
cargo build --release --locked --quiet
pgarc="$PWD/target/release/pgarc"

# The newest PostgreSQL available: zstd archives need pg_restore 16 or newer.
bindir=""
for major in 18 17 16 15; do
  for dir in /usr/lib/postgresql/$major/bin /var/cache/pgarc/pg/$major/bin "$HOME/.cache/pgarc/pg/$major/bin"; do
    if [ -z "$bindir" ] && [ -x "$dir/initdb" ]; then bindir=$dir; fi
  done
done
[ -n "$bindir" ] || { echo "demo: no PostgreSQL server binaries found" >&2; exit 1; }
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
"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -d demo -c "
  CREATE TABLE app.demo_events (id bigint PRIMARY KEY, at timestamptz NOT NULL, kind text, body jsonb);
  INSERT INTO app.demo_events
    SELECT g, timestamptz '2026-01-01' + g * interval '1 second', 'kind-' || g % 17,
           jsonb_build_object('n', g, 'tag', md5(g::text))
    FROM generate_series(1, 1500000) g;
  ANALYZE;"
echo "== sample database 'demo' loaded: $("$bindir/psql" -X -A -t -d demo -c \
  "SELECT count(*) || ' tables, ' || pg_size_pretty(pg_database_size('demo'))
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname IN ('app', 'Mixed Schema') AND c.relkind = 'r'")"

echo "== pgarc dump -d demo -j 2 --split-size 32MB -f $work/archive"
"$pgarc" dump -d demo -j 2 --split-size 32MB -f "$work/archive" --pg-dump "$bindir/pg_dump"

echo "== pgarc verify $work/archive (every file and frame against the manifest):"
"$pgarc" verify -j 2 "$work/archive"
echo "== a copy with one flipped byte in its biggest data file: pgarc verify names it (exit 1 expected)"
cp -a "$work/archive" "$work/damaged"
biggest=$(ls -S "$work/damaged"/*.dat.* | head -1)
off=$(( $(stat -c %s "$biggest") / 2 ))
byte=$(od -An -tu1 -j "$off" -N1 "$biggest" | tr -d ' ')
printf "\\$(printf %03o $(( (byte + 1) % 256 )))" | dd of="$biggest" bs=1 seek="$off" conv=notrunc status=none
if "$pgarc" verify -j 2 "$work/damaged"; then
  echo "demo: pgarc verify missed the damage" >&2
  exit 1
fi
rm -rf "$work/damaged"

echo "== pgarc restore -d restored -j 2 --verify $work/archive (then proves the database equals the archive)"
"$bindir/createdb" restored
"$pgarc" restore -d restored -j 2 --verify "$work/archive"
echo "== stock pg_restore -j 2 into database 'restored_stock':"
"$bindir/createdb" restored_stock
"$bindir/pg_restore" -j 2 -d restored_stock "$work/archive"
cat >"$work/fingerprint.sql" <<'SQL'
SELECT format('SELECT %L || '' '' || count(*) || '' '' || md5(coalesce(string_agg(md5(x::text), '','' ORDER BY md5(x::text)), '''')) FROM ONLY %I.%I x',
              n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1
\gexec
SQL
fingerprints() { "$bindir/psql" -X -A -t -v ON_ERROR_STOP=1 -d "$1" -f "$work/fingerprint.sql"; }
fingerprints demo >"$work/source.txt"
for db in restored restored_stock; do
  fingerprints "$db" >"$work/$db.txt"
  if [ -s "$work/source.txt" ] && cmp -s "$work/source.txt" "$work/$db.txt"; then
    echo "database '$db' equals the source: all $(wc -l <"$work/source.txt") tables have the same row count and content hash"
  else
    echo "demo: database '$db' differs from the source" >&2
    diff "$work/source.txt" "$work/$db.txt" >&2 || true
    exit 1
  fi
done
grep -E '^app\.(demo_events|orders) ' "$work/restored.txt"
echo "== pgarc verify --against: the database stock pg_restore made, by content digest, without the source"
"$pgarc" verify "$work/archive" --against -d restored_stock -j 2
echo "== one row changed in it: pgarc verify --against names the table (exit 1 expected)"
"$bindir/psql" -X -q -d restored_stock -c "UPDATE app.orders SET qty = qty + 1 WHERE id = (SELECT min(id) FROM app.orders)"
if "$pgarc" verify "$work/archive" --against -d restored_stock -j 2; then
  echo "demo: pgarc verify --against missed the change" >&2
  exit 1
fi
