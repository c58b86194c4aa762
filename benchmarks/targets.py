"""The processes under test: the origin, phantom, nginx, HAProxy, proxy.py, each started with an
equivalent generated config in a scratch directory, pinned with ``taskset``, stopped by PID.

Every target listens on 127.0.0.1 and forwards to the one origin: ``/small`` cached (where the
target has a cache), ``/nc/`` passed through, upgrades tunnelled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT = 10.0
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A started child; ``pid`` is what we stop."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    startup: float = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT)


def pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of ``pid`` and of its descendants to ``cores``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except (ProcessLookupError, FileNotFoundError):
            continue
        for child in children:
            pin(int(child), cores)


def rss_kib(pid: int) -> int:
    """Resident set of ``pid`` and its descendants, KiB."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    for tid in os.listdir(f"/proc/{pid}/task"):
        for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split():
            total += rss_kib(int(child))
    return total


def spawn(
    name: str, argv: list[str], port: int, workdir: Path, core: int, probe: str
) -> Process:
    """Start ``argv`` pinned to ``core`` and wait until ``probe`` (a path) answers 200 on
    ``port``; the wait is the startup time."""
    log = workdir / f"{name}.log"
    started = time.perf_counter()
    popen = subprocess.Popen(
        ["taskset", "-c", str(core), *argv],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
    )
    proc = Process(name, popen, port, log)
    deadline = started + START_TIMEOUT
    while True:
        if not proc.alive():
            raise RuntimeError(f"{name} exited at startup:\n{log.read_text()[-2000:]}")
        if _answers(port, probe):
            proc.startup = time.perf_counter() - started
            return proc
        if time.perf_counter() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} did not answer within {START_TIMEOUT}s")
        time.sleep(0.002)


def _answers(port: int, path: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# -- the targets -------------------------------------------------------------------------------


@dataclass
class Target:
    """How to start one proxy in front of the origin."""

    name: str
    cached: bool = True
    # proxy.py is a forward proxy: absolute-form request targets, CONNECT for tunnels.
    forward_proxy: bool = False
    workers: int = 1
    loop: str = "uvloop"
    extra: dict[str, str] = field(default_factory=dict)
    # phantom: lines added to [server.bench] (and tables after it), e.g. the shared cache's.
    config_tail: str = ""

    def available(self) -> str | None:
        """None when this target can run here, else why not."""
        binary = {"nginx": "nginx", "haproxy": "haproxy"}.get(self.kind)
        if binary and not shutil.which(binary):
            return f"{binary} not installed (apt-get install -y {binary})"
        if self.kind == "proxy.py":
            try:
                import proxy  # noqa: F401
            except ImportError:
                return "proxy.py not installed (pip install proxy.py into the bench venv)"
        return None

    @property
    def kind(self) -> str:
        return self.name.split("-")[0]

    def start(self, origin_port: int, workdir: Path, core: int) -> Process:
        port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        if self.kind == "direct":
            raise RuntimeError("direct is the origin itself")
        if self.kind == "phantom":
            config = workdir / "phantom.toml"
            config.write_text(
                phantom_config(port, origin_port, self.workers) + self.config_tail
            )
            argv = [sys.executable, "-m", "phantom", "serve", "--config", str(config)]
            argv += ["--loop", self.loop]
        elif self.kind == "nginx":
            config = workdir / "nginx.conf"
            config.write_text(nginx_config(port, origin_port, workdir))
            argv = ["nginx", "-c", str(config), "-p", str(workdir)]
        elif self.kind == "haproxy":
            config = workdir / "haproxy.cfg"
            config.write_text(haproxy_config(port, origin_port))
            argv = ["haproxy", "-db", "-f", str(config)]
        elif self.kind == "proxy.py":
            argv = [
                sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port),
                "--num-workers", "1", "--num-acceptors", "1", "--log-level", "WARNING",
            ]
        else:
            raise ValueError(self.name)
        probe = f"http://127.0.0.1:{origin_port}/nc/small" if self.forward_proxy else "/nc/small"
        return spawn(self.name, argv, port, workdir, core, probe)


def start_origin(workdir: Path, core: int) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.origin", "--port", str(port)]
    log = workdir / "origin.log"
    popen = subprocess.Popen(
        ["taskset", "-c", str(core), *argv],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    proc = Process("origin", popen, port, log)
    deadline = time.perf_counter() + START_TIMEOUT
    while not _answers(port, "/nc/small"):
        if not proc.alive() or time.perf_counter() > deadline:
            proc.stop()
            raise RuntimeError(f"origin did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.002)
    proc.startup = time.perf_counter() - (deadline - START_TIMEOUT)
    return proc


def start_redis(workdir: Path, core: int) -> Process:
    """A redis-server on a free port, persistence off, for ``cache_storage_mode = "redis"``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "redis.log"
    popen = subprocess.Popen(
        ["taskset", "-c", str(core), "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    proc = Process("redis", popen, port, log)
    deadline = time.perf_counter() + START_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            pass
        if not proc.alive() or time.perf_counter() > deadline:
            proc.stop()
            raise RuntimeError(f"redis-server did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.01)


def shared_cache_tail(redis_port: int, l1_ttl: float | None = None) -> str:
    """``Target.config_tail`` for phantom in redis mode on the Redis at ``redis_port``."""
    lines = ['cache_storage_mode = "redis"']
    if l1_ttl is not None:
        lines.append(f"cache_l1_ttl = {l1_ttl}")
    lines += ["[redis]", f'url = "redis://127.0.0.1:{redis_port}/0"']
    return "\n".join(lines) + "\n"


def phantom_config(port: int, origin_port: int, workers: int) -> str:
    lines = [
        f"http_port = {port}",
        'log_level = "warning"',
        # nginx runs with `access_log off` and HAProxy has no `log` line: compare like for like.
        'access_log = "off"',
        # The idle-tunnel figure holds up to 5,000 tunnels (nginx and HAProxy are configured
        # for that many too), all from one client: lift the default caps of 1,024 connections
        # and 512 tunnels, and the per-client ones of 256 connections and 64 tunnels.
        "max_connections = 0",
        "max_tunnels = 0",
        "max_connections_per_client = 0",
        "max_tunnels_per_client = 0",
        f"workers = {workers}" if workers > 1 else "",
        "",
        "[server.bench]",
        f'proxy_url = "http://127.0.0.1:{origin_port}"',
        # nginx and HAProxy keep bodies as the origin sent them; phantom's default (brotli)
        # would decode every hit for wrk, which sends no Accept-Encoding.
        'compress_strategy = "none"',
    ]
    return "\n".join(lines) + "\n"


def nginx_config(port: int, origin_port: int, workdir: Path) -> str:
    return f"""
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 19000; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy-tmp;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    proxy_cache_path {workdir}/cache levels=1:2 keys_zone=bench:10m max_size=64m
                     use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        location /small {{
            proxy_pass http://origin;
            proxy_set_header Connection "";
            proxy_cache bench;
            add_header Cache-Status $upstream_cache_status;
        }}
        location /nc/ {{
            proxy_pass http://origin;
            proxy_set_header Connection "";
        }}
        location / {{
            proxy_pass http://origin;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""


def haproxy_config(port: int, origin_port: int) -> str:
    return f"""
global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    timeout tunnel 3600s
    option http-keep-alive
cache bench
    total-max-size 64
    max-age 3600
frontend bench
    bind 127.0.0.1:{port}
    http-request cache-use bench if {{ path /small }}
    http-response cache-store bench
    default_backend origin
backend origin
    http-reuse always
    server origin 127.0.0.1:{origin_port}
"""
