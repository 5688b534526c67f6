"""A throwaway PostgreSQL cluster for tests and benchmarks.

    with PostgresCluster.start() as pg:           # initdb + pg_ctl start in a temp dir
        url = pg.create_database()                # postgresql+psycopg://...@127.0.0.1:PORT/kv_...

`KEYVAULT_TEST_POSTGRES_URL` (a server you run, with a role allowed to CREATE DATABASE)
is used instead when set. The cluster listens on 127.0.0.1 on a free port and on a unix
socket in its own directory, with password (scram) authentication. initdb refuses to
run as root, so as root the cluster runs as the `postgres` system user (runuser).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ENV_URL = "KEYVAULT_TEST_POSTGRES_URL"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries (or no usable server): tests skip with this message."""


def find_bindir() -> Path:
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    candidates += [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)]
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists() and (bindir / "postgres").exists():
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/install-postgresql.sh "
        f"or set {ENV_URL}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user_prefix() -> tuple[list[str], str | None]:
    """How to run server commands: as ourselves, or via runuser as `postgres` when root."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no 'postgres' system user for initdb") from None
    runuser = shutil.which("runuser")
    if not runuser:
        raise PostgresUnavailable("running as root and runuser is missing (needed to run initdb as postgres)")
    return [runuser, "-u", "postgres", "--"], "postgres"


class PostgresCluster:
    def __init__(self, admin_url: str, *, directory: Path | None = None, stop=None):
        self.admin_url = admin_url  # a URL to the maintenance database, for CREATE/DROP DATABASE
        self.directory = directory
        self._stop = stop
        self._databases: list[str] = []

    # -- lifecycle
    @classmethod
    def start(cls) -> PostgresCluster:
        if os.environ.get(ENV_URL):
            return cls(os.environ[ENV_URL])
        bindir = find_bindir()
        prefix, user = _as_user_prefix()
        root = Path(tempfile.mkdtemp(prefix="keyvault-pg-"))
        data, sockdir = root / "data", root / "sock"
        sockdir.mkdir()
        password = secrets.token_urlsafe(24)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        os.chmod(pwfile, 0o600)
        if user:
            entry = pwd.getpwnam(user)
            for path in (root, sockdir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        port = free_port()
        log = root / "server.log"

        def run(*args: str, timeout: float = 120) -> None:
            proc = subprocess.run(
                [*prefix, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, cwd=root
            )
            if proc.returncode != 0:
                server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{Path(args[0]).name} failed:\n{proc.stdout.decode(errors='replace')}\n{server_log}")

        run(str(bindir / "initdb"), "-D", str(data), "-U", "keyvault", "-A", "scram-sha-256",
            f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8", "--locale=C")
        options = f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")

        def stop() -> None:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, cwd=root)
            shutil.rmtree(root, ignore_errors=True)

        admin_url = f"postgresql+psycopg://keyvault:{quote(password, safe='')}@127.0.0.1:{port}/postgres"
        cluster = cls(admin_url, directory=root, stop=stop)
        cluster.bindir, cluster.data, cluster.port, cluster.log, cluster._prefix = bindir, data, port, log, prefix
        cluster.sockdir, cluster.options = sockdir, options
        cluster._wait_ready()
        return cluster

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self._libpq(self.admin_url), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise

    def kill_server(self) -> None:
        """SIGKILL the postmaster (a crash, not a shutdown)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        subprocess.run([*self._prefix, "kill", "-9", str(pid)], check=True)
        deadline = time.monotonic() + 30
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def restart_after_crash(self) -> None:
        subprocess.run(
            [*self._prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o",
             self.options, "-w", "-t", "60", "start"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=True, timeout=120, cwd=self.directory,
        )
        self._wait_ready()

    @property
    def can_crash(self) -> bool:
        return self._stop is not None

    def stop(self) -> None:
        for name in list(self._databases):
            self.drop_database(name)
        if self._stop:
            self._stop()
            self._stop = None

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases
    @staticmethod
    def _libpq(url: str) -> str:
        return url.replace("postgresql+psycopg://", "postgresql://", 1)

    def admin_execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self._libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        name = "kv_" + secrets.token_hex(6)
        self.admin_execute(f"CREATE DATABASE {name}")
        self._databases.append(name)
        return self.url_for(name)

    def url_for(self, name: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"

    def drop_database(self, name_or_url: str) -> None:
        name = name_or_url.rpartition("/")[2].split("?")[0]
        try:
            self.admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except Exception:  # noqa: BLE001 - best effort cleanup of a throwaway database
            pass
        if name in self._databases:
            self._databases.remove(name)


# ---------------------------------------------------------------------- pytest fixtures
try:
    import pytest
except ImportError:  # used outside pytest (benchmarks)
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def postgres_cluster():
        """One throwaway PostgreSQL cluster for the session; skips when none can run."""
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pytest.skip("psycopg is not installed: pip install jupyter-keyvault[hub]")
        try:
            cluster = PostgresCluster.start()
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        yield cluster
        cluster.stop()

    @pytest.fixture
    def postgres_url(postgres_cluster):
        """A fresh, empty database in the session cluster (dropped afterwards)."""
        url = postgres_cluster.create_database()
        yield url
        postgres_cluster.drop_database(url)
