"""tests/secret_watch.py on a lab host for the length of a `with`, its report read by a thread
(tests/lab/test_leak_scan.py, tests/lab/test_sudo.py)."""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

WATCHER = (Path(__file__).parent / "secret_watch.py").read_text()


class HostSecretWatch:
    """Watches `watched` (and reports files holding a secret left under `temp_dirs`) for the
    `secrets` ([label, value] pairs, sent over stdin). `ssh` turns the watcher's command into the
    argv that runs it on the host; `as_root` goes before it (e.g. ["sudo", "-n"])."""

    def __init__(
        self,
        ssh: Callable[[str], list[str]],
        secrets: list[list[str]],
        watched: Sequence[str],
        temp_dirs: Sequence[str],
        as_root: Sequence[str] = (),
    ):
        arguments = [*watched, "--left-behind-only-under", *temp_dirs]
        self.argv = ssh(shlex.join([*as_root, "python3", "-c", WATCHER, *arguments]))
        self.secrets, self.temp_dirs = secrets, list(temp_dirs)
        self.events: list[dict] = []

    def __enter__(self):
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.process.stdin.write(json.dumps(self.secrets) + "\n")  # never on a command line
        self.process.stdin.flush()
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert self.ready.wait(60), "the watcher on the host never got ready"
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            self.events.append(json.loads(line))
            if self.events[-1]["event"] == "ready":
                self.ready.set()

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()  # the watcher's stop signal
        self.process.wait(timeout=120)
        self.reader.join(timeout=10)

    def found(self, kind: str) -> list[dict]:
        """The events of one kind ("created", "readable", "left"), once the watcher is done."""
        assert self.events and self.events[-1]["event"] == "done", (
            f"the watcher did not finish: {self.events[-3:]}"
        )
        return [event for event in self.events if event["event"] == kind]
