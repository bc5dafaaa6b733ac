"""A PostgreSQL server of your own in a folder: for a class store on the instructor's laptop, and for the tests
(which run the store against a real server, never a mock).

    server = LocalPostgres("class-db", port=5433, host="127.0.0.1").start()   # initdb on first use
    server.url("postgres")        # postgresql+psycopg://rlhf_admin:...@127.0.0.1:5433/postgres
    server.create_database("cs329")
    server.stop()

It runs Debian's (or any) PostgreSQL binaries, found through `pg_config --bindir`, /usr/lib/postgresql/*/bin or
PATH. The superuser `rlhf_admin` gets a random password (kept in the folder, mode 600); connections over TCP need a
password (scram-sha-256). PostgreSQL refuses to run as root: as root the folder is handed to the `postgres` system
user and the server runs as that user.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

from rlhf_lab.core.errors import SetupError
from rlhf_lab.core.script import one_line

__all__ = ["LocalPostgres", "postgres_bindir", "check_database_name", "reachable_host"]

ADMIN = "rlhf_admin"


def postgres_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def check_database_name(name: str, what: str = "database name") -> None:
    """Refuse a database name other than letters, digits and underscores (ValueError naming `what`)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"{what} {name!r}: use letters, digits and underscores")


def reachable_host(host: str, networks=()) -> str:
    """The address to put in URLs for a server listening on `host`: `host` itself, but for every network card
    (0.0.0.0, ::) this machine's address on the first of `networks` that it has a route to (the source address the
    system would use; nothing is sent), else its host name. 0.0.0.0 in a student's URL is the student's own machine."""
    if host not in ("0.0.0.0", "::", "*", ""):
        return host
    for net in networks:
        try:
            network = ipaddress.ip_network(net, strict=False)
            with socket.socket(socket.AF_INET6 if network.version == 6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((str(next(iter(network.hosts()), network.network_address)), 9))  # UDP: picks a route only
                address = s.getsockname()[0]
        except (ValueError, OSError):
            continue
        return f"[{address}]" if ":" in address else address
    return socket.getfqdn()


class LocalPostgres:
    """A PostgreSQL server whose data lives in `folder`. See the module docstring."""

    def __init__(self, folder: str | Path, port: int = 5433, host: str = "127.0.0.1"):
        self.folder = Path(folder).resolve()
        self.data = self.folder / "data"
        self.port, self.host = int(port), host
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {port}: a TCP port is a number from 1 to 65535 (e.g. 5433)")
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise SetupError("PostgreSQL is not installed: `sudo apt-get install postgresql` (Debian/Ubuntu) or "
                               "`brew install postgresql` (macOS), then try again.")
        self._as_postgres = os.geteuid() == 0

    # ---- running the binaries as the right user -----------------------------------------------------------------
    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise SetupError(f"{tool} failed: {one_line(proc.stderr or proc.stdout)[-600:]}")
        return proc

    @property
    def password(self) -> str:
        return (self.folder / "admin-password").read_text().strip()

    def url(self, database: str = "postgres", user: str = ADMIN, password: str | None = None) -> str:
        """A SQLAlchemy URL for `database` on this server (the superuser's unless `user`/`password` are given)."""
        from urllib.parse import quote

        password = self.password if password is None else password
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"postgresql+psycopg://{credentials}@{self.host}:{self.port}/{database}"

    # ---- life cycle ----------------------------------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def init(self) -> "LocalPostgres":
        """Create the folder and the database cluster (once)."""
        if self.initialised():
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        pwfile = self.folder / "admin-password"
        if not pwfile.exists():  # private from the start: written at the umask's 0644, it was readable until a chmod
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(fd, 0o600)  # whatever the umask
                f.write(secrets.token_urlsafe(18) + "\n")
        if self._as_postgres:  # the postgres user must own the folder and read the password file
            shutil.chown(self.folder, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
            reach = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-r", str(pwfile)])
            if reach.returncode != 0:
                raise SetupError(f"As root, the server runs as the postgres user, who cannot reach {self.folder}; "
                                   "give a folder outside root's home (e.g. /srv/class-db).")
        self._run("initdb", "-D", str(self.data), "-U", ADMIN, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                  "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        return self

    def allow(self, networks: list[str]) -> None:
        """Let clients from these networks (CIDR, e.g. "10.0.0.0/8") connect with a password; by default only
        this machine can. Takes effect at the next start (or at once on a running server)."""
        import ipaddress

        hba = self.data / "pg_hba.conf"
        lines = hba.read_text()
        for net in networks:
            try:
                net = str(ipaddress.ip_network(net, strict=False))
            except ValueError:
                raise ValueError(f"--allow {net!r} is not a network: write it like 10.0.0.0/8 or 192.168.1.0/24") \
                    from None
            rule = f"host all all {net} scram-sha-256"
            if rule not in lines.splitlines():
                lines += rule + "\n"
        hba.write_text(lines)
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "reload")

    def start(self, max_connections: int = 100) -> "LocalPostgres":
        """Start the server (initialising it first if needed); returns when it accepts connections. A class whose
        students keep a kernel open each needs about one connection per student (plus a few)."""
        self.init()
        if self.running():
            return self
        if int(max_connections) < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        options = (f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.folder} "
                   f"-c max_connections={int(max_connections)}")
        log = self.folder / "server.log"
        seen = log.stat().st_size if log.is_file() else 0  # the log of earlier runs is not this start's story
        proc = self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "-t", "60", "start",
                         check=False)
        if proc.returncode != 0:
            said = self._last_complaint(log, seen, proc)
            raise SetupError(f"PostgreSQL did not start: {said} (the server's log: {log})")
        return self

    def _last_complaint(self, log: Path, seen: int, proc: subprocess.CompletedProcess) -> str:
        """What stopped this start, on one line: from what the server logged after byte `seen` (a port in use,
        else the last FATAL/PANIC line, else its last line), else pg_ctl's own words."""
        try:
            with open(log, "rb") as f:
                f.seek(seen)
                lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        if any("Address already in use" in line for line in lines):
            return f"port {self.port} on {self.host} is in use (another server?): give another --port"
        for line in reversed(lines):
            for level in ("FATAL:", "PANIC:"):
                if level in line:
                    return " ".join(line[line.index(level):].split())[:300]
        last = lines[-1][:300] if lines else one_line(proc.stderr or proc.stdout)[-300:]
        return last or f"pg_ctl exited with status {proc.returncode}"

    def running(self) -> bool:
        return self.initialised() and self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def stop(self) -> None:
        """Stop the server (fast shutdown: open transactions are rolled back, committed data is kept)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- databases -----------------------------------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        """Create database `name` (if it does not exist yet); returns its superuser URL."""
        import sqlalchemy as sa

        check_database_name(name)
        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                exists = conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).scalar()
                if not exists:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)
