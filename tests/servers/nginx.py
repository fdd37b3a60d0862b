"""nginx as the new host: plain HTTP, TLS with a test certificate, and a PROXY protocol port.

`start_nginx(workdir)` runs nginx in the foreground (`daemon off`, one worker) on free loopback ports and
stops it in `finally`. Files served from the plain and TLS ports: /1k.txt, /50m.bin (random; its sha256
is on the returned object) and /echo-addr ("$remote_addr $http_x_forwarded_for"). The PROXY port answers
every request with "$proxy_protocol_addr $remote_addr" and logs $proxy_protocol_addr to pp.log.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.common import free_port, require_binary, wait_tcp

BIG_SIZE = 50 * 1024 * 1024
CERT_CN = "new-host.example.test"


@dataclass(frozen=True)
class Nginx:
    """A running nginx: its ports, files and test certificate."""

    host: str
    http_port: int
    tls_port: int
    pp_port: int
    prefix: Path
    cert_pem: Path
    big_sha256: str
    pid: int

    @property
    def http(self) -> str:
        """HOST:PORT of the plain HTTP port."""
        return f"{self.host}:{self.http_port}"

    @property
    def tls(self) -> str:
        """HOST:PORT of the TLS port."""
        return f"{self.host}:{self.tls_port}"

    @property
    def pp(self) -> str:
        """HOST:PORT of the proxy_protocol port."""
        return f"{self.host}:{self.pp_port}"


def _make_files(www: Path) -> str:
    (www / "1k.txt").write_bytes(b"x" * 1023 + b"\n")
    digest = hashlib.sha256()
    with open(www / "50m.bin", "wb") as f:
        for _ in range(BIG_SIZE // (1 << 20)):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def _make_certificate(prefix: Path) -> tuple[Path, Path]:
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run(
        [
            require_binary("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={CERT_CN}",
            "-addext",
            f"subjectAltName=DNS:{CERT_CN}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def _config(prefix: Path, host: str, ports: tuple[int, int, int], cert: Path, key: Path) -> str:
    http_port, tls_port, pp_port = ports
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {prefix}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    echo = 'location = /echo-addr { default_type text/plain; return 200 "$remote_addr $http_x_forwarded_for\\n"; }'
    return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
{temp}
  log_format pp '$proxy_protocol_addr $remote_addr "$request"';
  server {{
    listen {host}:{http_port} backlog=4096;
    root {prefix}/www;
    {echo}
  }}
  server {{
    listen {host}:{tls_port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    root {prefix}/www;
    {echo}
  }}
  server {{
    listen {host}:{pp_port} proxy_protocol;
    access_log {prefix}/pp.log pp;
    location / {{ default_type text/plain; return 200 "$proxy_protocol_addr $remote_addr\\n"; }}
  }}
}}
"""


@contextmanager
def start_nginx(workdir: Path, host: str = "127.0.0.1") -> Iterator[Nginx]:
    """nginx in the foreground on free ports of `host`; stopped (and waited for) on exit."""
    binary = require_binary("nginx", "nginx-light")
    prefix = workdir / "nginx"
    (prefix / "www").mkdir(parents=True)
    (prefix / "tmp").mkdir()
    big_sha256 = _make_files(prefix / "www")
    cert, key = _make_certificate(prefix)
    ports = (free_port(host), free_port(host), free_port(host))
    conf = prefix / "nginx.conf"
    conf.write_text(_config(prefix, host, ports, cert, key))
    with open(prefix / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 10
        for port in ports:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(prefix / 'error.log').read_text()[-500:]}")
            wait_tcp(host, port, timeout_s=max(0.5, deadline - time.monotonic()))
        yield Nginx(host, *ports, prefix, cert, big_sha256, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
