"""A throwaway Postgres cluster for tests and benchmarks that restart their database: the
machine's shared server is never restarted. `initdb` and `pg_ctl` from
/usr/lib/postgresql/*/bin, run as the `postgres` OS user, on a free loopback port."""

from __future__ import annotations

import contextlib
import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests import processes


def postgres_bin() -> Path:
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError("no Postgres server binaries under /usr/lib/postgresql/*/bin")
    return found[-1]


class Cluster:
    """A throwaway Postgres cluster owned by the `postgres` OS user, on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.bin = postgres_bin()
        self.root = root
        self.data = root / "data"
        self.logfile = root / "postgres.log"
        self.port = processes.free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/corral"

    def _as_postgres(self, *args: str, timeout: float = 120) -> None:
        command = ["runuser", "-u", "postgres", "--", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")

    def init(self) -> None:
        shutil.chown(self.root, user="postgres", group="postgres")
        self.root.chmod(0o700)
        (self.root / "sock").mkdir()
        shutil.chown(self.root / "sock", user="postgres", group="postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root / 'sock'}'",
            "max_connections": "200",
            # A benchmark database: durability is not what is measured.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self.start()
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "corral"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"
        )

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    pg = Cluster(Path(tempfile.mkdtemp(prefix="corral-pg-")))
    try:
        pg.init()
        yield pg
    finally:
        pg.destroy()
