"""A private PyPI mirror for the lab: a PEP 503 simple index of the locked wheels, over HTTPS.

    .venv/bin/python lab/pip_index.py --lock flowerbed/locks/flower-2.2.0.txt --dir DIR \
        --ca-dir CA_DIR --listen 10.77.0.1

Downloads the lock's files into DIR/files with pip (through this machine's own egress),
writes DIR/simple/<project>/index.html for each, and serves DIR over HTTPS with a certificate
for the listen address signed by the CA in CA_DIR (lab/intercepting_proxy.py's). Every GET
is logged to DIR/requests.log, one path a line. Prints {"port": N, "url": ".../simple/"} once
it listens; runs until killed.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import ssl
import subprocess
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from intercepting_proxy import CertificateAuthority


def normalized(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()


def project_of(filename: str) -> str:
    """A wheel's or sdist's project name, as in its file name."""
    if filename.endswith(".whl"):
        return filename.split("-")[0]
    return filename.rsplit("-", 1)[0]


def download(lock: Path, files: Path) -> None:
    """Every file the lock names, whatever its markers say about THIS machine's Python: the
    hosts' Python decides (Debian 12's 3.11.2 needs async-timeout, a newer one does not)."""
    files.mkdir(parents=True, exist_ok=True)
    unmarked = files.parent / "lock-without-markers.txt"
    unmarked.write_text(re.sub(r" ;[^\\\n]*", " ", lock.read_text()))
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
    # pip's progress on stderr: stdout carries only the listening line
    command = [*pip, "-r", str(unmarked), "-d", str(files)]
    subprocess.run(command, check=True, timeout=600, stdout=sys.stderr)


def write_index(root: Path) -> list[str]:
    """simple/index.html and simple/<project>/index.html; returns the projects."""
    projects: dict[str, list[Path]] = {}
    for path in sorted((root / "files").iterdir()):
        projects.setdefault(normalized(project_of(path.name)), []).append(path)
    simple = root / "simple"
    for project, paths in projects.items():
        links = "".join(
            f'<a href="../../files/{html.escape(p.name)}#sha256='
            f'{hashlib.sha256(p.read_bytes()).hexdigest()}">{html.escape(p.name)}</a>\n'
            for p in paths
        )
        (simple / project).mkdir(parents=True, exist_ok=True)
        (simple / project / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n"
        )
    top = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(projects))
    (simple / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{top}</body></html>\n")
    return sorted(projects)


class LoggingHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, log, **kwargs):
        self.request_log = log
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.request_log.write(self.path + "\n")
        self.request_log.flush()
        super().do_GET()

    def log_message(self, format, *args):  # the request log above is the record
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lock", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--ca-dir", required=True)
    parser.add_argument("--listen", required=True)
    arguments = parser.parse_args()
    root = Path(arguments.dir)
    download(Path(arguments.lock), root / "files")
    write_index(root)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(
        *map(str, CertificateAuthority(Path(arguments.ca_dir)).leaf(arguments.listen))
    )
    with open(root / "requests.log", "a") as log:
        handler = partial(LoggingHandler, directory=str(root), log=log)
        server = ThreadingHTTPServer((arguments.listen, 0), handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        port = server.server_address[1]
        url = f"https://{arguments.listen}:{port}/simple/"
        print(json.dumps({"port": port, "url": url}), flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
