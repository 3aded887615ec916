#!/usr/bin/env python3
"""pgarc's benchmark: pgarc against stock pg_dump/pg_restore on the same throwaway server, in
one run, alternating the tools round by round (A B A B ...), with medians, min/max, ratios pair
by pair, archive sizes and peak RSS. See bench/README.md.

Nothing here is asserted: the run prints what it measured next to the targets of issue 6, and
says which are met.
"""

import argparse
import os
import shlex
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Server settings for every run, the same for both tools: enough WAL that a checkpoint does
# not land in the middle of one tool's run only, and shared buffers as a DBA would set them.
SERVER_SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "32GB",
    "checkpoint_timeout": "1h",
    "maintenance_work_mem": "256MB",
    "max_connections": "100",
    # pg_dump (and pgarc) lock every table in one transaction: 20,000 tables need more than
    # the default 64 x max_connections lock slots.
    "max_locks_per_transaction": "512",
    # Off: a restored database gets vacuumed and analyzed by autovacuum soon after, and that
    # work would land on whichever run comes next (it made restores 30 % slower at random).
    "autovacuum": "off",
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def find_bindir(wanted):
    majors = [wanted] if wanted else ["18", "17", "16", "15"]
    home = os.path.expanduser("~")
    for major in majors:
        for d in (f"/usr/lib/postgresql/{major}/bin", f"/var/cache/pgarc/pg/{major}/bin",
                  f"{home}/.cache/pgarc/pg/{major}/bin"):
            if os.access(os.path.join(d, "initdb"), os.X_OK):
                return d
    sys.exit(f"bench: no PostgreSQL {wanted or '15-18'} server binaries found; "
             "run scripts/install-deps.sh")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    seconds: float
    maxrss_kib: int


def run_timed(cmd, env, cwd=None):
    """Runs a command (a list, or a string for bash), returns wall time and the peak RSS of
    the largest process in it (wait4's ru_maxrss covers the child and its reaped children)."""
    if isinstance(cmd, str):
        cmd = ["bash", "-o", "pipefail", "-c", cmd]
    err = tempfile.TemporaryFile()
    start = time.monotonic()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.monotonic() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {p.returncode}:\n{tail}")
    return Run(seconds, usage.ru_maxrss)


class Cluster:
    def __init__(self, bindir, work):
        self.bindir = bindir
        self.work = work
        self.data = os.path.join(work, "data")
        self.sock = os.path.join(work, "sock")
        self.port = free_port()
        self.as_server = []
        os.makedirs(self.sock)
        if os.geteuid() == 0:
            # initdb refuses root: the server runs as nobody, in directories nobody owns.
            for d in (work, self.sock):
                shutil.chown(d, "nobody", "nogroup")
            self.as_server = ["runuser", "-u", "nobody", "--"]
        self.env = dict(os.environ, PGHOST=self.sock, PGPORT=str(self.port), PGUSER="postgres",
                        PGDATABASE="postgres")
        self.env["PATH"] = bindir + ":" + self.env.get("PATH", "")
        self.env.pop("PGPASSWORD", None)

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def start(self):
        subprocess.run(self.as_server + [self.bin("initdb"), "-D", self.data, "-U", "postgres",
                                         "-A", "trust", "-E", "UTF8", "--locale=C", "-N"],
                       check=True, stdout=subprocess.DEVNULL)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock}"
        for k, v in SERVER_SETTINGS.items():
            opts += f" -c {k}={v}"
        subprocess.run(self.as_server + [self.bin("pg_ctl"), "-D", self.data, "-l",
                                         os.path.join(self.work, "server.log"), "-w", "-o",
                                         opts, "start"],
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(self.as_server + [self.bin("pg_ctl"), "-D", self.data, "-m", "fast",
                                         "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def psql(self, db, sql):
        out = subprocess.run([self.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-d", db, "-c", sql],
                             env=self.env, check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def psql_file(self, db, script):
        subprocess.run([self.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db],
                       input=script, env=self.env, check=True, text=True,
                       stdout=subprocess.DEVNULL)

    def recreate(self, db):
        self.psql("postgres", f'DROP DATABASE IF EXISTS "{db}"')
        self.psql("postgres", f'CREATE DATABASE "{db}" TEMPLATE template0')

    def settle(self):
        """Before each timed run: a checkpoint, so that no run pays for another's dirty pages."""
        self.psql("postgres", "CHECKPOINT")
        os.sync()


# ---------------------------------------------------------------------------------------------
# Datasets. Deterministic: generate_series and md5, no random().

def build_skewed(c, db, scale):
    rows = int(5_000_000 * scale)
    c.recreate(db)
    c.psql_file(db, f"""
CREATE TABLE big (
    id bigint PRIMARY KEY,
    label text NOT NULL,
    amount numeric(14,2) NOT NULL,
    created timestamptz NOT NULL,
    attrs jsonb NOT NULL,
    payload bytea
);
INSERT INTO big
SELECT g,
       'item ' || g || ' ' || md5(g::text),
       ((g * 7919) % 10000000) / 100.0,
       timestamptz '2020-01-01 00:00:00+00' + g * interval '7 seconds',
       jsonb_build_object('n', g, 'kind', 'k' || (g % 13), 'tags',
                          jsonb_build_array(g % 7, g % 11, g % 17), 'ref', md5((g * 3)::text)),
       decode(md5(g::text) || substr(md5((g + 1)::text), 1, 2 * (g % 16)::int), 'hex')
FROM generate_series(1::bigint, {rows}) g;
CREATE INDEX big_created ON big (created);
CREATE TABLE small_00 (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO small_00 SELECT g, 'parent ' || g FROM generate_series(1, 1000) g;
""")
    script = []
    for i in range(1, 21):
        n = 2000 * i
        script.append(f"""
CREATE TABLE small_{i:02} (
    id int PRIMARY KEY,
    parent int NOT NULL REFERENCES small_00 (id),
    big_id bigint,
    qty int NOT NULL,
    note text
);
INSERT INTO small_{i:02}
SELECT g, 1 + g % 1000, 1 + (g::bigint * 104729) % {rows}, g % 97, 'note ' || md5((g + {i})::text)
FROM generate_series(1, {n}) g;
CREATE INDEX small_{i:02}_parent ON small_{i:02} (parent);
""")
    c.psql_file(db, "".join(script) + "VACUUM ANALYZE;")


def build_pgbench(c, db, scale):
    c.recreate(db)
    subprocess.run([c.bin("pgbench"), "-i", "-q", "-I", "dtGvp", "-s", str(scale), db],
                   env=c.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c.psql(db, "VACUUM ANALYZE")


def build_many(c, db, tables, rows):
    """`tables` tables with a primary key, of `rows` rows each (give or take 50)."""
    c.recreate(db)
    for start in range(0, tables, 200):
        script = []
        for i in range(start, min(tables, start + 200)):
            n = max(1, rows - 50 + i % 100)
            script.append(f"""
CREATE TABLE t_{i:05} (id int PRIMARY KEY, name text NOT NULL, at timestamptz NOT NULL);
INSERT INTO t_{i:05} SELECT g, 'row ' || g || ' of {i}',
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour'
FROM generate_series(1, {n}) g;
""")
        c.psql_file(db, "".join(script))
    c.psql(db, "VACUUM ANALYZE")


# ---------------------------------------------------------------------------------------------
# Measurement.

@dataclass
class Series:
    label: str
    runs: list = field(default_factory=list)
    size: int = 0

    def add(self, run):
        self.runs.append(run)

    @property
    def times(self):
        return [r.seconds for r in self.runs]

    @property
    def median(self):
        return statistics.median(self.times)

    @property
    def peak_rss_mib(self):
        return max(r.maxrss_kib for r in self.runs) / 1024


def ratio(a, b):
    """The median of the ratios of runs paired by round."""
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def dir_size(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total


class S3Server:
    """A loopback S3-compatible server with authentication on (Garage or s3s-fs, as
    scripts/install-deps.sh installs them), one bucket, one key."""

    BUCKET = "pgarc-bench"

    def __init__(self, kind, work):
        root = os.environ.get("PGARC_S3_CACHE") or (
            "/var/cache/pgarc/s3" if os.geteuid() == 0
            else os.path.expanduser("~/.cache/pgarc/s3"))
        self.kind = kind
        self.work = os.path.join(work, f"s3-{kind}")
        os.makedirs(self.work)
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        log_out = open(os.path.join(self.work, "server.log"), "w")
        if kind == "s3s-fs":
            binary = os.path.join(root, "s3s-fs-0.14.1", "bin", "s3s-fs")
            self.key, self.secret = "AK" + os.urandom(9).hex(), os.urandom(20).hex()
            data = os.path.join(self.work, "root")
            os.makedirs(os.path.join(data, self.BUCKET))
            self.proc = subprocess.Popen(
                [binary, "--host", "127.0.0.1", "--port", str(port), "--access-key", self.key,
                 "--secret-key", self.secret, data], stdout=log_out, stderr=log_out)
            self.wait(port)
        elif kind == "garage":
            binary = os.path.join(root, "garage-2.5.0", "bin", "garage")
            rpc, admin = free_port(), free_port()
            cfg = os.path.join(self.work, "garage.toml")
            with open(cfg, "w") as f:
                f.write(f'metadata_dir = "{self.work}/meta"\ndata_dir = "{self.work}/data"\n'
                        f'db_engine = "sqlite"\nreplication_factor = 1\n'
                        f'rpc_bind_addr = "127.0.0.1:{rpc}"\n'
                        f'rpc_public_addr = "127.0.0.1:{rpc}"\n'
                        f'rpc_secret = "{os.urandom(32).hex()}"\n'
                        f'[s3_api]\ns3_region = "us-east-1"\n'
                        f'api_bind_addr = "127.0.0.1:{port}"\n'
                        f'root_domain = ".s3.garage.localhost"\n'
                        f'[admin]\napi_bind_addr = "127.0.0.1:{admin}"\n')
            self.proc = subprocess.Popen([binary, "-c", cfg, "server"], stdout=log_out,
                                         stderr=log_out, env=dict(os.environ, RUST_LOG="warn"))
            self.wait(port)

            def garage(*a):
                for _ in range(50):
                    r = subprocess.run([binary, "-c", cfg, *a], capture_output=True, text=True)
                    if r.returncode == 0:
                        return r.stdout
                    time.sleep(0.2)
                raise RuntimeError(f"garage {a}: {r.stderr}")
            node = garage("node", "id", "-q").strip().split("@")[0]
            garage("layout", "assign", "-z", "dc1", "-c", "10G", node)
            garage("layout", "apply", "--version", "1")
            garage("bucket", "create", self.BUCKET)
            self.key, self.secret = "GK" + os.urandom(12).hex(), os.urandom(32).hex()
            garage("key", "import", "--yes", "-n", "bench", self.key, self.secret)
            garage("bucket", "allow", "--read", "--write", "--owner", self.BUCKET,
                   "--key", "bench")
        else:
            sys.exit(f"bench: unknown S3 server {kind!r} (garage or s3s-fs)")

    def wait(self, port):
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the {self.kind} server did not start")

    def env(self):
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Bench:
    def __init__(self, args, cluster, pgarc):
        self.args = args
        self.c = cluster
        self.pgarc = pgarc
        self.out = os.path.join(args.workdir, "archives")
        os.makedirs(self.out, exist_ok=True)
        self.series = {}
        self.count = 0  # numbers new archive paths and restore targets
        self.dbs = []  # restored databases, dropped when their dataset is done

    def s(self, key, label):
        if key not in self.series:
            self.series[key] = Series(label)
        return self.series[key]

    def fresh(self, name):
        """A new archive path. Archives stay until their dataset is done: removing thousands
        of files just before the next run makes ext4 skip the recently freed inodes when it
        allocates new ones, a cost that would land on whichever tool runs next."""
        self.count += 1
        return os.path.join(self.out, f"{name}-{self.count}")

    def new_db(self):
        """A new, empty database to restore into. Like archives, restored databases are
        dropped only when their dataset is done: dropping one just before a run would put
        thousands of freshly freed inodes in the way of the server's next file creations."""
        self.count += 1
        name = f"restored_{self.count}"
        self.c.recreate(name)
        self.dbs.append(name)
        return name

    def clean(self):
        shutil.rmtree(self.out, ignore_errors=True)
        os.makedirs(self.out)
        for db in self.dbs:
            self.c.psql("postgres", f'DROP DATABASE "{db}"')
        self.dbs = []

    def timed(self, key, label, cmd, archive=None):
        self.c.settle()
        run = run_timed(cmd, self.c.env)
        s = self.s(key, label)
        s.add(run)
        if archive:
            s.size = dir_size(archive)
        log(f"  {label}: {run.seconds:.2f} s, peak RSS {run.maxrss_kib / 1024:.0f} MiB")
        return run

    # The commands, exactly as a user types them.
    def pgarc_dump(self, db, path, jobs, compress=None):
        cmd = [self.pgarc, "dump", "-d", db, "-j", str(jobs), "-f", path,
               "--pg-dump", self.c.bin("pg_dump")]
        if compress:
            cmd += ["-Z", compress]
        return cmd

    def pg_dump(self, db, path, jobs):
        return [self.c.bin("pg_dump"), "-Fd", "-j", str(jobs), "-f", path, db]

    def pgarc_restore(self, db, path, jobs):
        return [self.pgarc, "restore", "-d", db, "-j", str(jobs), path]

    def pg_restore(self, db, path, jobs):
        return [self.c.bin("pg_restore"), "-d", db, "-j", str(jobs), "--exit-on-error", path]

    def pgarc_verify_against(self, db, path, jobs):
        """Issue 19: the database compared with the archive, by content digest."""
        return [self.pgarc, "verify", path, "--against", "-d", db, "-j", str(jobs)]

    def digest(self):
        """Issue 19's costs in one run: pgarc dump with and without the content digests
        (alternating), on skewed and pgbench, and pgarc verify --against of skewed at -j 2
        next to pgarc dump of it."""
        a = self.args
        j = a.jobs
        for name, build in (("skewed", lambda: build_skewed(self.c, "skewed", a.scale)),
                            ("pgbench", lambda: build_pgbench(self.c, "pgbench", a.pgbench_scale))):
            log(f"building {name}")
            build()
            for r in range(a.rounds):
                log(f"{name} digest cost, round {r + 1} of {a.rounds}")
                with_digest = self.fresh(f"{name}-pgarc")
                self.timed(f"{name}/dump/pgarc", f"{name}: pgarc dump -j {j}",
                           self.pgarc_dump(name, with_digest, j), with_digest)
                without = self.fresh(f"{name}-nodigest")
                self.timed(f"{name}/dump/pgarc-nodigest", f"{name}: pgarc dump -j {j} --no-digest",
                           self.pgarc_dump(name, without, j) + ["--no-digest"], without)
                if name == "skewed":
                    self.timed("skewed/verify/against",
                               f"skewed: pgarc verify --against -j {j}",
                               self.pgarc_verify_against(name, with_digest, j))
            self.c.psql("postgres", f'DROP DATABASE "{name}"')
            self.clean()

    def pgarc_ready(self, db, path, jobs):
        """Restored and analyzed: pgarc restore --analyze."""
        return self.pgarc_restore(db, path, jobs) + ["--analyze"]

    def pg_ready(self, db, path, jobs):
        """Restored and analyzed the stock way: pg_restore, then vacuumdb --analyze-only."""
        restore = " ".join(shlex.quote(a) for a in self.pg_restore(db, path, jobs))
        vacuumdb = [self.c.bin("vacuumdb"), "--analyze-only", "-j", str(jobs), "-d", db]
        return restore + " && " + " ".join(shlex.quote(a) for a in vacuumdb)

    def dump_pair(self, name, db, extra=()):
        """One round of pgarc dump and pg_dump; returns the archives' paths."""
        j = self.args.jobs
        a = self.fresh(f"{name}-pgarc")
        self.timed(f"{name}/dump/pgarc", f"{name}: pgarc dump -j {j}",
                   self.pgarc_dump(db, a, j), a)
        b = self.fresh(f"{name}-pg_dump")
        self.timed(f"{name}/dump/pg_dump", f"{name}: pg_dump -Fd -j {j}",
                   self.pg_dump(db, b, j), b)
        for key, label, cmd in extra:
            self.timed(key, label, cmd)
        return a, b

    def restore_pair(self, name, a, b, keep=True):
        """One round of pgarc restore and pg_restore, each into a new database, then of the
        two ways to a database that is restored and analyzed ("ready"). With `keep` False
        (pgbench: 9 GB per copy), each is dropped right after its run."""
        j = self.args.jobs
        for key, label, cmd, archive in (
                (f"{name}/restore/pgarc", f"{name}: pgarc restore -j {j}", self.pgarc_restore, a),
                (f"{name}/restore/pg_restore", f"{name}: pg_restore -j {j}", self.pg_restore, b),
                (f"{name}/ready/pgarc", f"{name}: pgarc restore --analyze -j {j}",
                 self.pgarc_ready, a),
                (f"{name}/ready/pg_restore",
                 f"{name}: pg_restore -j {j} + vacuumdb --analyze-only -j {j}",
                 self.pg_ready, b)):
            db = self.new_db()
            self.timed(key, label, cmd(db, archive, j))
            if not keep:
                self.c.psql("postgres", f'DROP DATABASE "{db}"')
                self.dbs.remove(db)

    def floor_cmd(self, db, path):
        """The big table copied as two concurrent ctid halves into zstd -1."""
        pages = int(self.c.psql(db, "SELECT pg_relation_size('big') / current_setting('block_size')::int"))
        half = pages // 2
        psql = self.c.bin("psql")
        q1 = f"COPY (SELECT * FROM big WHERE ctid < '({half},0)'::tid) TO STDOUT"
        q2 = f"COPY (SELECT * FROM big WHERE ctid >= '({half},0)'::tid) TO STDOUT"
        os.makedirs(path, exist_ok=True)
        return (f"{psql} -X -d {db} -c \"{q1}\" | zstd -1 -q -f -o {path}/1.zst & "
                f"{psql} -X -d {db} -c \"{q2}\" | zstd -1 -q -f -o {path}/2.zst & "
                "wait -n && wait -n")

    def skewed(self):
        a = self.args
        j = a.jobs
        log(f"building skewed (scale {a.scale})")
        build_skewed(self.c, "skewed", a.scale)
        log(f"skewed: {self.c.psql('skewed', 'SELECT pg_size_pretty(pg_total_relation_size($$big$$))')} "
            "big table (with indexes)")
        for r in range(a.rounds):
            log(f"skewed dump, round {r + 1} of {a.rounds}")
            g = self.fresh("skewed-gzip")
            f = self.fresh("skewed-floor")
            pa, pb = self.dump_pair("skewed", "skewed", extra=[
                ("skewed/dump/pgarc-gzip6", f"skewed: pgarc dump -j {j} -Z gzip:6",
                 self.pgarc_dump("skewed", g, j, "gzip:6")),
                ("skewed/dump/floor", "skewed: floor (2 ctid halves into zstd -1)",
                 self.floor_cmd("skewed", f)),
            ])
            n = self.fresh("skewed-nodigest")
            self.timed("skewed/dump/pgarc-nodigest", f"skewed: pgarc dump -j {j} --no-digest",
                       self.pgarc_dump("skewed", n, j) + ["--no-digest"], n)
            self.timed("skewed/verify/against", f"skewed: pgarc verify --against -j {j}",
                       self.pgarc_verify_against("skewed", pa, j))
        for r in range(a.rounds):
            log(f"skewed restore, round {r + 1} of {a.rounds}")
            self.restore_pair("skewed", pa, pb)
        self.at_j8("skewed", "skewed")
        self.clean()

    def s3(self):
        """Issue 20: pgarc dump and restore of skewed to and from a loopback S3 server,
        alternating with the same to and from a directory; then both at -j 8 for peak RSS."""
        a = self.args
        j = a.jobs
        server = S3Server(a.s3_server, a.workdir)
        self.c.env.update(server.env())
        try:
            log(f"building skewed (scale {a.scale}); S3 server: {a.s3_server}")
            build_skewed(self.c, "skewed", a.scale)
            urls = []
            for r in range(a.rounds):
                log(f"skewed to S3, round {r + 1} of {a.rounds}")
                local = self.fresh("skewed-local")
                self.timed("s3/dump/local", f"skewed: pgarc dump -j {j} to a directory",
                           self.pgarc_dump("skewed", local, j), local)
                self.count += 1
                url = f"s3://{S3Server.BUCKET}/skewed-{self.count}"
                urls.append(url)
                self.timed("s3/dump/s3", f"skewed: pgarc dump -j {j} to s3:// ({a.s3_server})",
                           self.pgarc_dump("skewed", url, j))
            for r in range(a.rounds):
                log(f"skewed from S3, round {r + 1} of {a.rounds}")
                self.timed("s3/restore/local", f"skewed: pgarc restore -j {j} from a directory",
                           self.pgarc_restore(self.new_db(), local, j))
                self.timed("s3/restore/s3",
                           f"skewed: pgarc restore -j {j} from s3:// ({a.s3_server})",
                           self.pgarc_restore(self.new_db(), urls[r], j))
            log("skewed to and from S3 at -j 8 (peak RSS)")
            self.count += 1
            url = f"s3://{S3Server.BUCKET}/skewed-j8-{self.count}"
            self.timed("s3/dump/s3-j8", f"skewed: pgarc dump -j 8 to s3://",
                       self.pgarc_dump("skewed", url, 8))
            self.timed("s3/restore/s3-j8", f"skewed: pgarc restore -j 8 from s3://",
                       self.pgarc_restore(self.new_db(), url, 8))
            self.timed("s3/verify/s3", f"skewed: pgarc verify -j {j} of s3://",
                       [self.pgarc, "verify", "-j", str(j), url])
            self.c.psql("postgres", 'DROP DATABASE "skewed"')
            self.clean()
        finally:
            server.stop()
            for k in server.env():
                self.c.env.pop(k, None)

    def resume(self):
        """Issue 21 on skewed: pgarc dump with its journal and without (PGARC_BENCH_NO_JOURNAL,
        which exists for this measurement), alternating; and a dump under a snapshot held by
        pgarc snapshot, killed with SIGKILL halfway through (at half the uninterrupted dump's
        time of the same round) and resumed: the two runs' times added up."""
        a = self.args
        j = a.jobs
        log(f"building skewed (scale {a.scale})")
        build_skewed(self.c, "skewed", a.scale)
        id_file = os.path.join(a.workdir, "snapshot.id")
        holder = subprocess.Popen([self.pgarc, "snapshot", "-d", "skewed", "--id-file", id_file,
                                   "-q"], env=self.c.env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(id_file):
                if time.monotonic() > deadline or holder.poll() is not None:
                    raise RuntimeError("pgarc snapshot did not start")
                time.sleep(0.05)
            snap = open(id_file).read().strip()
            for r in range(a.rounds):
                log(f"skewed resume, round {r + 1} of {a.rounds}")
                plain = self.fresh("skewed-journal")
                whole = self.timed("resume/dump/pgarc", f"skewed: pgarc dump -j {j}",
                                   self.pgarc_dump("skewed", plain, j), plain)
                off = self.fresh("skewed-nojournal")
                env = dict(self.c.env, PGARC_BENCH_NO_JOURNAL="1")
                self.c.settle()
                run = run_timed(self.pgarc_dump("skewed", off, j), env)
                self.s("resume/dump/nojournal",
                       f"skewed: pgarc dump -j {j} without the journal").add(run)
                log(f"  without the journal: {run.seconds:.2f} s")
                killed = self.fresh("skewed-killed")
                cmd = self.pgarc_dump("skewed", killed, j) + ["--snapshot", snap]
                self.c.settle()
                start = time.monotonic()
                p = subprocess.Popen(cmd, env=self.c.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                time.sleep(whole.seconds / 2)
                p.send_signal(signal.SIGKILL)
                _, _, usage = os.wait4(p.pid, 0)
                first = time.monotonic() - start
                resumed = run_timed([self.pgarc, "dump", "--resume", "-d", "skewed", "-j", str(j),
                                     "-f", killed, "--pg-dump", self.c.bin("pg_dump")],
                                    self.c.env)
                total = Run(first + resumed.seconds, max(usage.ru_maxrss, resumed.maxrss_kib))
                self.s("resume/dump/resumed",
                       f"skewed: pgarc dump -j {j} killed halfway + dump --resume").add(total)
                log(f"  killed after {first:.2f} s, resumed in {resumed.seconds:.2f} s")
        finally:
            holder.terminate()
            holder.wait()
        self.c.psql("postgres", 'DROP DATABASE "skewed"')
        self.clean()

    def linear(self):
        a = self.args
        j = a.jobs
        log(f"building skewed at scale {a.scale * 4} (x4)")
        build_skewed(self.c, "skewed_x4", a.scale * 4)
        for r in range(a.rounds):
            log(f"skewed x1 / x4 dump, round {r + 1} of {a.rounds}")
            p1 = self.fresh("x1")
            self.timed("x1/dump/pgarc", f"skewed x1: pgarc dump -j {j}",
                       self.pgarc_dump("skewed", p1, j))
            p4 = self.fresh("x4")
            self.timed("x4/dump/pgarc", f"skewed x4: pgarc dump -j {j}",
                       self.pgarc_dump("skewed_x4", p4, j))
        self.c.psql("postgres", 'DROP DATABASE "skewed_x4"')
        self.clean()

    def simple(self, name, build, keep=True):
        a = self.args
        log(f"building {name}")
        build()
        for r in range(a.rounds):
            log(f"{name} dump, round {r + 1} of {a.rounds}")
            extra = []
            if name == "pgbench":
                n = self.fresh("pgbench-nodigest")
                extra = [("pgbench/dump/pgarc-nodigest",
                          f"pgbench: pgarc dump -j {a.jobs} --no-digest",
                          self.pgarc_dump(name, n, a.jobs) + ["--no-digest"])]
            pa, pb = self.dump_pair(name, name, extra=extra)
        for r in range(a.rounds):
            log(f"{name} restore, round {r + 1} of {a.rounds}")
            self.restore_pair(name, pa, pb, keep)
        self.at_j8(name, name, keep)
        self.c.psql("postgres", f'DROP DATABASE "{name}"')
        self.clean()

    def at_j8(self, name, db, keep=True):
        """One pgarc dump and restore at -j 8, for their peak RSS."""
        log(f"{name} at -j 8 (peak RSS)")
        path = self.fresh(f"{name}-j8")
        self.timed(f"{name}/dump/pgarc-j8", f"{name}: pgarc dump -j 8",
                   self.pgarc_dump(db, path, 8), path)
        target = self.new_db()
        self.timed(f"{name}/restore/pgarc-j8", f"{name}: pgarc restore -j 8",
                   self.pgarc_restore(target, path, 8))
        if not keep:
            self.c.psql("postgres", f'DROP DATABASE "{target}"')
            self.dbs.remove(target)


# ---------------------------------------------------------------------------------------------
# Report.

def fmt_s(s):
    return f"{s.median:.2f} s ({min(s.times):.2f}..{max(s.times):.2f})"


def report(b, args, versions, started):
    S = b.series
    lines = []
    p = lines.append
    p(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs "
      f"({cpu_model()}), {mem_gib():.0f} GiB RAM, {platform.system()} {platform.release()}")
    p(f"Versions: {versions}")
    p(f"Server settings: " + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items()))
    p(f"Run: datasets {args.datasets}; {args.rounds} rounds alternating the tools, "
      f"-j {args.jobs}, skewed scale "
      f"{args.scale}, pgbench scale {args.pgbench_scale}, many {args.many_tables} tables of "
      f"{args.many_rows} rows, tiny {args.tiny_tables} tables of 100 rows; "
      f"{(time.time() - started) / 60:.0f} min in all")
    p("")
    p("| run | median (min..max) | archive | peak RSS |")
    p("|---|---|---|---|")
    for s in S.values():
        size = f"{s.size / 2**20:.0f} MiB" if s.size else ""
        p(f"| {s.label} | {fmt_s(s)} | {size} | {s.peak_rss_mib:.0f} MiB |")
    p("")
    p("| target | goal | measured | met |")
    p("|---|---|---|---|")

    def row(what, goal, value, ok, unit=""):
        p(f"| {what} | {goal} | {value}{unit} | {'yes' if ok else '**NO**'} |")

    def r(key_a, key_b, what, goal):
        if key_a in S and key_b in S:
            v = ratio(S[key_a], S[key_b])
            row(what, f"<= {goal:.2f}", f"{v:.2f}", v <= goal)

    # Issue 18's targets (dump: no regression from what was reached).
    r("skewed/dump/pgarc", "skewed/dump/pg_dump",
      "skewed: pgarc dump (defaults) / pg_dump -Fd -j 2", 0.25)
    r("skewed/dump/pgarc-gzip6", "skewed/dump/pg_dump",
      "skewed: pgarc dump -Z gzip:6 / pg_dump -Fd -j 2", 0.70)
    r("skewed/dump/pgarc", "skewed/dump/floor", "skewed: pgarc dump / zstd floor", 1.00)
    r("skewed/restore/pgarc", "skewed/restore/pg_restore",
      "skewed: pgarc restore / pg_restore -j 2", 0.60)
    r("skewed/ready/pgarc", "skewed/ready/pg_restore",
      "skewed: time to ready, pgarc restore --analyze / (pg_restore + vacuumdb --analyze-only)",
      0.50)
    r("pgbench/ready/pgarc", "pgbench/ready/pg_restore",
      "pgbench: time to ready, pgarc restore --analyze / (pg_restore + vacuumdb)", 0.50)
    r("many/dump/pgarc", "many/dump/pg_dump", "many: pgarc dump / pg_dump", 1.00)
    r("many/restore/pgarc", "many/restore/pg_restore", "many: pgarc restore / pg_restore", 0.75)
    r("pgbench/restore/pgarc", "pgbench/restore/pg_restore",
      "pgbench: pgarc restore / pg_restore", 0.60)
    for n in [int(x) for x in args.tiny_tables.split(",") if x.strip()]:
        for what, tool in (("dump", "pg_dump"), ("restore", "pg_restore")):
            r(f"tiny{n}/{what}/pgarc", f"tiny{n}/{what}/{tool}",
              f"tiny ({n} tables of 100 rows): pgarc {what} / {tool}", 0.80)
    # Issue 19: what the content digests cost.
    r("skewed/dump/pgarc", "skewed/dump/pgarc-nodigest",
      "skewed: pgarc dump / pgarc dump --no-digest (the digests' cost)", 1.05)
    r("pgbench/dump/pgarc", "pgbench/dump/pgarc-nodigest",
      "pgbench: pgarc dump / pgarc dump --no-digest (the digests' cost)", 1.05)
    r("skewed/verify/against", "skewed/dump/pgarc",
      "skewed: pgarc verify --against -j 2 / pgarc dump -j 2", 1.20)
    a, b = S.get("pgbench/dump/pgarc"), S.get("pgbench/dump/pg_dump")
    if a and b:
        p(f"| pgbench: pgarc dump / pg_dump | (no target) | {ratio(a, b):.2f} | |")
    if "skewed/dump/pgarc" in S and "skewed/dump/pg_dump" in S:
        v = S["skewed/dump/pgarc"].size / S["skewed/dump/pg_dump"].size
        row("skewed: pgarc archive size / pg_dump archive size",
            "<= 1.00", f"{v:.3f} ({S['skewed/dump/pgarc'].size / 2**20:.0f} / "
            f"{S['skewed/dump/pg_dump'].size / 2**20:.0f} MiB)", v <= 1.0)
    if "skewed/dump/pgarc" in S and "skewed/restore/pgarc" in S:
        rss2 = max(S[k].peak_rss_mib for k in ("skewed/dump/pgarc", "skewed/restore/pgarc"))
        row("skewed: peak RSS of pgarc dump and restore at -j 2", "<= 128 MiB",
            f"{rss2:.0f}", rss2 <= 128, " MiB")
    j8 = {k: s for k, s in S.items() if k.endswith("/pgarc-j8")}
    if j8:
        worst = max(j8, key=lambda k: j8[k].peak_rss_mib)
        rss8 = j8[worst].peak_rss_mib
        names = sorted({k.split("/")[0] for k in j8})
        row(f"peak RSS of pgarc dump and restore at -j 8, any dataset ({', '.join(names)}; "
            f"most: {j8[worst].label})", "<= 256 MiB", f"{rss8:.0f}", rss8 <= 256, " MiB")
    # Issue 20: object storage.
    r("s3/dump/s3", "s3/dump/local",
      f"skewed: pgarc dump -j {args.jobs} to s3:// ({args.s3_server}) / to a directory", 1.25)
    r("s3/restore/s3", "s3/restore/local",
      f"skewed: pgarc restore -j {args.jobs} from s3:// ({args.s3_server}) / from a directory",
      1.25)
    for key, jobs, base in (("s3/dump/s3", args.jobs, "s3/dump/local"),
                            ("s3/restore/s3", args.jobs, "s3/restore/local"),
                            ("s3/dump/s3-j8", 8, None), ("s3/restore/s3-j8", 8, None)):
        if key in S:
            # The stated bound (format-spec/tool.md §9): what the same run takes locally plus
            # 11 MiB per open data file (jobs + 1); 256 MiB at -j 8 whatever the local figure.
            limit = 256 if jobs == 8 else S[base].peak_rss_mib + 11 * (jobs + 1)
            v = S[key].peak_rss_mib
            row(f"{S[key].label}: peak RSS", f"<= {limit:.0f} MiB", f"{v:.0f}", v <= limit,
                " MiB")
    # Issue 21: resume.
    r("resume/dump/resumed", "resume/dump/pgarc",
      f"skewed: pgarc dump -j {args.jobs} killed halfway + resumed / uninterrupted", 1.10)
    r("resume/dump/pgarc", "resume/dump/nojournal",
      f"skewed: pgarc dump -j {args.jobs} / without the journal (the journal's cost)", 1.02)
    if "x4/dump/pgarc" in S:
        v = ratio(S["x4/dump/pgarc"], S["x1/dump/pgarc"])
        row("skewed x4: pgarc dump time / time at x1", "<= 4.40", f"{v:.2f}", v <= 4.4)
    return "\n".join(lines)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def mem_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pgarc", default=os.path.join(ROOT, "target", "release", "pgarc"))
    ap.add_argument("--pg", default=os.environ.get("PGARC_BENCH_PG", ""),
                    help="PostgreSQL major version to run (default: the newest installed)")
    ap.add_argument("--datasets", default="skewed,pgbench,many,tiny,linear",
                    help="comma-separated: skewed, pgbench, many, tiny, linear (skewed x1 vs x4), "
                         "digest (issue 19 only: dump with and without digests on skewed and "
                         "pgbench, verify --against of skewed), s3 (issue 20: skewed to and "
                         "from a loopback S3 server against a directory), resume (issue 21: "
                         "the journal's cost, a dump killed halfway and resumed)")
    ap.add_argument("--s3-server", default="garage", choices=("garage", "s3s-fs"),
                    help="the S3-compatible server of the s3 dataset")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="skewed scale: 1 = 5 million rows, about 1.2 GB")
    ap.add_argument("--pgbench-scale", type=int, default=200,
                    help="pgbench -s (200: 20 million accounts, 2.6 GB, the issue's scale)")
    ap.add_argument("--many-tables", type=int, default=2000)
    ap.add_argument("--many-rows", type=int, default=12000,
                    help="rows per table of the many dataset (12000: about 2.5 GB)")
    ap.add_argument("--tiny-tables", default="2000,20000",
                    help="the tiny datasets: comma-separated table counts, 100 rows each")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--workdir", default="",
                    help="where the cluster and archives go (default: a new directory in /tmp)")
    ap.add_argument("--out", default="", help="also write the report to this file (markdown)")
    args = ap.parse_args()

    started = time.time()
    bindir = find_bindir(args.pg)
    for tool in ("zstd",):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing; run scripts/install-deps.sh")
    if not os.access(args.pgarc, os.X_OK):
        sys.exit(f"bench: {args.pgarc} is missing; run cargo build --release")
    args.workdir = tempfile.mkdtemp(prefix="pgarc-bench.", dir=args.workdir or None)
    os.chmod(args.workdir, 0o755)
    c = Cluster(bindir, args.workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        c.start()
        # The first line of --version: the version and the commit (the rest lists the
        # supported server and archive versions).
        pgarc_version = subprocess.run([args.pgarc, "--version"], capture_output=True,
                                       text=True).stdout.strip().split("\n")[0]
        server = subprocess.run([c.bin("postgres"), "--version"], capture_output=True,
                                text=True).stdout.strip()
        zstd_v = subprocess.run(["zstd", "--version"], capture_output=True,
                                text=True).stdout.strip()
        versions = f"{pgarc_version}; {server} (pg_dump/pg_restore of the same); {zstd_v}"
        log(f"cluster up: {server}, port {c.port}, in {args.workdir}")
        b = Bench(args, c, args.pgarc)
        sets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        for d in sets:
            if d == "skewed":
                b.skewed()
            elif d == "pgbench":
                b.simple("pgbench", lambda: build_pgbench(c, "pgbench", args.pgbench_scale),
                         keep=False)
            elif d == "many":
                b.simple("many", lambda: build_many(c, "many", args.many_tables,
                                                    args.many_rows))
            elif d == "tiny":
                for n in [int(x) for x in args.tiny_tables.split(",") if x.strip()]:
                    name = f"tiny{n}"
                    b.simple(name, lambda n=n, name=name: build_many(c, name, n, 100))
            elif d == "digest":
                b.digest()
            elif d == "s3":
                b.s3()
            elif d == "resume":
                b.resume()
            elif d == "linear":
                if "skewed" not in sets:
                    build_skewed(c, "skewed", args.scale)
                b.linear()
            else:
                sys.exit(f"bench: unknown dataset {d!r}")
        text = report(b, args, versions, started)
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
    finally:
        c.stop()
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
