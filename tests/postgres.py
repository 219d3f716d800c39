"""A throw-away PostgreSQL server from Debian's package, for the shared-storage sweep test."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def start_postgres(folder: Path) -> tuple[str, callable]:
    """initdb + pg_ctl start in ``folder`` on a free local port; returns the SQLAlchemy URL
    and a function that stops the server. As root, the server runs as user ``postgres``
    (PostgreSQL refuses to run as root)."""
    bin_dir = server_binaries()
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder.mkdir(parents=True, exist_ok=True)
    if prefix:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "server.log"),
        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    return url, lambda: run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
