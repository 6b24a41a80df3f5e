"""Re-resolve every host venv lock: locks/flower-<version>.in -> locks/flower-<version>.txt.

    python3 locks/compile.py            # all locks
    python3 locks/compile.py 2.2.0      # one version

Each lock is fully resolved and hash-pinned for every Python the supported Debian releases ship
(3.11 on Debian 12, 3.13 on Debian 13): `--universal` keeps environment markers instead of
resolving for this machine only. Hosts install it with `pip install --require-hashes --no-deps`.
"""

import subprocess
import sys
from pathlib import Path

LOCKS = Path(__file__).resolve().parent
OLDEST_HOST_PYTHON = "3.11"


def compile_lock(source: Path) -> None:
    version = source.stem.removeprefix("flower-")
    command = [
        "uv", "pip", "compile", "--quiet", "--universal", "--generate-hashes",
        "--python-version", OLDEST_HOST_PYTHON,
        "--custom-compile-command", f"python3 locks/compile.py {version}",
        str(source), "--output-file", str(source.with_suffix(".txt")),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def main(versions: list[str]) -> None:
    sources = [LOCKS / f"flower-{v}.in" for v in versions] or sorted(LOCKS.glob("flower-*.in"))
    for source in sources:
        compile_lock(source)
        print(f"locked {source.with_suffix('.txt').name}")


if __name__ == "__main__":
    main(sys.argv[1:])
