"""The backing services of the test suite: the shared PostgreSQL and Redis of the cluster pass,
and private PostgreSQL / redis-server instances that a test may stop and start at will.

The suite runs in one of two backends, chosen by ``CHATGATE_TEST_BACKEND``:

- ``embedded`` (the default): SQLite files and in-memory limits; needs no service.
- ``cluster``: every gateway gets a fresh database of its own on the shared PostgreSQL
  (``CHATGATE_TEST_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432/postgres``) and a
  random ``redis_prefix`` on the shared Redis (``CHATGATE_TEST_REDIS``, default
  ``redis://127.0.0.1:6379/0``). A missing service is an error, never a skip.

Fresh databases are copies of a template migrated once per session with
``chatgate db upgrade`` (``CREATE DATABASE ... TEMPLATE`` takes ~50 ms, and the gateway then
starts on an up-to-date schema); ``CHATGATE_TEST_PG_TEMPLATE=0`` gives empty databases instead,
which every gateway migrates on start. Everything a session creates is named after its pid
(``cgt_<pid>_<n>``, ``cgt:<pid>-<hex>:``), dropped at the end, and swept by a later session if
the process died before it could clean up.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

BACKEND = os.environ.get("CHATGATE_TEST_BACKEND", "embedded").strip() or "embedded"
if BACKEND not in ("embedded", "cluster"):
    raise RuntimeError(f"CHATGATE_TEST_BACKEND must be 'embedded' or 'cluster', got {BACKEND!r}")
CLUSTER = BACKEND == "cluster"
CLUSTER_ONLY = "cluster mode only: run with CHATGATE_TEST_BACKEND=cluster (make test-cluster)"

PG_ADMIN_URL = os.environ.get(
    "CHATGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CHATGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
USE_TEMPLATE = os.environ.get("CHATGATE_TEST_PG_TEMPLATE", "1") not in ("0", "false", "no")

_START_HINT = (
    "start the services with .ci/run (which then runs `make test`), or by hand: "
    "`pg_ctlcluster --skip-systemctl-redirect <version> <cluster> start` and "
    "`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no`; "
    "or run the embedded pass alone with `make test-embedded`"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redact(url: str) -> str:
    """A URL fit for a message: the password (if any) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def pg_connect(url: str, **kw: Any) -> Any:
    """A psycopg (3) connection from a gateway-style URL (``postgresql+driver://`` accepted)."""
    import psycopg

    url = re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)
    kw.setdefault("connect_timeout", 5)
    return psycopg.connect(url, **kw)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServiceUnavailable(RuntimeError):
    """A service the cluster pass needs does not answer; the message says how to start it."""


class SharedBackends:
    """This session's databases on the shared PostgreSQL and prefixes on the shared Redis."""

    def __init__(self, pg_admin_url: str = PG_ADMIN_URL, redis_url: str = REDIS_URL) -> None:
        self.pg_admin_url = pg_admin_url
        self.redis_url = redis_url
        self.tag = str(os.getpid())
        self.databases: list[str] = []
        self.prefixes: list[str] = []
        self._template: str | None = None
        self._lock = threading.Lock()
        self._n = 0

    # --- checks ------------------------------------------------------------------------

    def check(self) -> None:
        """Both services answer, or ServiceUnavailable naming the one that does not."""
        try:
            with pg_connect(self.pg_admin_url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            raise ServiceUnavailable(
                f"the cluster test pass needs PostgreSQL at {redact(self.pg_admin_url)} "
                f"(CHATGATE_TEST_POSTGRES), which does not answer: {_first_line(exc)}; "
                + _START_HINT
            ) from None
        try:
            self.redis().ping()
        except Exception as exc:
            raise ServiceUnavailable(
                f"the cluster test pass needs Redis at {redact(self.redis_url)} "
                f"(CHATGATE_TEST_REDIS), which does not answer: {_first_line(exc)}; " + _START_HINT
            ) from None

    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url, socket_connect_timeout=3, socket_timeout=5)

    # --- databases -----------------------------------------------------------------------

    def _admin(self, statement: str, *names: str) -> None:
        """One statement on the admin connection; ``{}`` in it are the quoted ``names``."""
        from psycopg import sql

        query = sql.SQL(statement).format(*map(sql.Identifier, names))
        with pg_connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(query)

    def new_database(self, migrated: bool = True) -> str:
        """A fresh, empty database (migrated to the newest schema unless told otherwise);
        returns its URL."""
        with self._lock:
            self._n += 1
            name = f"cgt_{self.tag}_{self._n}"
            template = self._migrated_template() if migrated and USE_TEMPLATE else None
            if template:
                self._admin("CREATE DATABASE {} TEMPLATE {}", name, template)
            else:
                self._admin("CREATE DATABASE {}", name)
            self.databases.append(name)
        return with_database(self.pg_admin_url, name)

    def _migrated_template(self) -> str:
        if self._template is not None:
            return self._template
        name = f"cgt_{self.tag}_template"
        self._admin("CREATE DATABASE {}", name)
        self.databases.append(name)
        url = with_database(self.pg_admin_url, name)
        with tempfile.TemporaryDirectory(prefix="cgt-tpl-") as tmp:
            cfg = Path(tmp) / "chatgate.yaml"
            cfg.write_text(f"database_url: {url}\n")
            done = subprocess.run(
                [sys.executable, "-m", "chatgate", "db", "upgrade", "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp,
            )
        if done.returncode != 0:
            raise RuntimeError(
                "could not migrate the template database with `chatgate db upgrade` "
                f"(exit {done.returncode}); set CHATGATE_TEST_PG_TEMPLATE=0 to let every "
                f"gateway migrate its own database instead:\n{done.stdout}{done.stderr}"
            )
        self._template = name
        return name

    def drop_database(self, url: str) -> None:
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", urlsplit(url).path.lstrip("/"))

    # --- redis -----------------------------------------------------------------------------

    def new_prefix(self) -> str:
        prefix = f"cgt:{self.tag}-{os.urandom(4).hex()}:"
        self.prefixes.append(prefix)
        return prefix

    def redis_keys(self, prefix: str) -> list[bytes]:
        return list(self.redis().scan_iter(match=_glob_escape(prefix) + "*", count=1000))

    # --- clean-up ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Drop this session's databases and delete its Redis keys."""
        for name in reversed(self.databases):
            with contextlib.suppress(Exception):
                self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
        self.databases.clear()
        with contextlib.suppress(Exception):
            r = self.redis()
            for prefix in self.prefixes:
                _unlink_matching(r, _glob_escape(prefix) + "*")
        self.prefixes.clear()

    def sweep_stale(self) -> None:
        """Drop what earlier sessions left behind when they died before cleaning up."""
        names: list[str] = []
        with contextlib.suppress(Exception), pg_connect(self.pg_admin_url) as conn:
            names = [
                str(r[0])
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'cgt\\_%'"
                )
            ]
        for name in names:
            m = re.fullmatch(r"cgt_(\d+)_\w+", name)
            if m and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(Exception):
                    self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
        with contextlib.suppress(Exception):
            r = self.redis()
            pids = {
                int(m.group(1))
                for k in r.scan_iter(match="cgt:*", count=1000)
                if (m := re.match(rb"cgt:(\d+)-", k))
            }
            for pid in pids:
                if not _pid_alive(pid):
                    _unlink_matching(r, f"cgt:{pid}-*")


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


def _unlink_matching(r: Any, pattern: str) -> None:
    batch: list[bytes] = []
    for key in r.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            r.unlink(*batch)
            batch.clear()
    if batch:
        r.unlink(*batch)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


shared = SharedBackends()


# --- private instances, for tests that stop and start a service ------------------------------


def postgres_bindir() -> Path | None:
    """The newest PostgreSQL server binaries (initdb, pg_ctl) on this machine, if any."""
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        with contextlib.suppress(ValueError):
            found.append((int(d.parent.name.split(".")[0]), d))
    for _, d in sorted(found, reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL server on a free loopback port, in a temporary directory.

    initdb refuses to run as root, so as root every server command runs as the `postgres`
    user (``runuser -u postgres --``). ``stop()`` is an immediate shutdown (a crash, as far
    as the clients can tell); ``start()`` brings it back on the same port with its data.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="cgt-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.sockets.mkdir()
        self.logfile = self.base / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            os.chmod(self.base, 0o755)
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        self.running = False

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}\n{self.log()}"
            )

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")[-4000:]
        return ""

    def start(self) -> PrivatePostgres:
        opts = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=100"
        )
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l",
                  str(self.logfile), "-o", opts)  # fmt: skip
        self.running = True
        return self

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: the server dies at once (clients see their connections cut)."""
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))
            self.running = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("fast")
        shutil.rmtree(self.base, ignore_errors=True)


class PrivateRedis:
    """A throw-away redis-server on a free loopback port; ``stop()`` kills it, ``start()``
    starts a new one (empty, as after a crash without persistence) on the same port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.base = Path(tempfile.mkdtemp(prefix="cgt-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.base),
             "--logfile", str(self.base / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{self.log()}") from None
                time.sleep(0.02)
            finally:
                client.close()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "redis.log").read_text(errors="replace")[-4000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own, started; skipped without the binaries."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb cannot run as root")
    pg = PrivatePostgres(bindir)
    try:
        yield pg.start()
    finally:
        pg.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, started; skipped without the binary."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on PATH")
    r = PrivateRedis(binary)
    try:
        yield r.start()
    finally:
        r.close()
