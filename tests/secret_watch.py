"""Run ON a lab host, as root: report every file that holds a secret while others can read it.

    sudo python3 -c "$(cat secret_watch.py)" /tmp /var/tmp /home/deploy /etc  < secrets.json

stdin's first line is a JSON list of [label, value] pairs (stdin, so no secret is ever on a
command line). Every directory named (and every directory created under one) is watched with
inotify; at each creation, write, close, rename or mode change of a file, the file is read if
it is readable by others and reported when it holds a secret. stdin's end stops the watch;
then every file under the directories is checked once more, whatever its mode, and each
holding a secret is reported as left behind (pass --left-behind-only-under to narrow that to the
temp directories, whose new files are reported too). Output: JSON lines {"event": "ready" |
"created" | "readable" | "left" | "done", ...}; only labels are printed, never a secret.
"""

import ctypes
import json
import os
import select
import stat
import sys
import threading

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x4, 0x8, 0x80, 0x100
IN_ISDIR = 0x40000000
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
HEADER = 16  # struct inotify_event: int wd; uint32 mask, cookie, len; then the name
LARGEST = 4 << 20


def say(**fields):
    print(json.dumps(fields), flush=True)


def holding(path, secrets):
    """Labels of the secrets a file holds ([] if it is gone or too big)."""
    try:
        with open(path, "rb") as f:
            data = f.read(LARGEST)
    except OSError:  # vanished between the event and the read: it held nothing we could see
        return []
    return [label for label, value in secrets if value in data]


def main():
    roots, temp_roots = sys.argv[1:], []
    if "--left-behind-only-under" in roots:
        at = roots.index("--left-behind-only-under")
        roots, temp_roots = roots[:at], roots[at + 1 :]
    secrets = [(label, value.encode()) for label, value in json.loads(sys.stdin.readline())]
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0, f"inotify_init1: errno {ctypes.get_errno()}"
    watched = {}

    def watch(directory):
        for current, _dirs, _ in os.walk(directory):
            wd = libc.inotify_add_watch(fd, current.encode(), MASK)
            if wd >= 0:
                watched[wd] = current

    def check(path, mask):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if mask & IN_CREATE and os.path.dirname(path) in temp_roots:
            say(event="created", path=path, mode=oct(st.st_mode & 0o7777))
        if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IROTH:
            for label in holding(path, secrets):
                say(event="readable", path=path, mode=oct(st.st_mode & 0o7777), secret=label)

    for root in roots:
        watch(root)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    say(event="ready", directories=len(watched))
    while not done.is_set():
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        buffer = os.read(fd, 1 << 16)
        offset = 0
        while offset < len(buffer):
            wd, mask, _, length = (
                int.from_bytes(buffer[offset + i : offset + i + 4], sys.byteorder)
                for i in (0, 4, 8, 12)
            )
            name = buffer[offset + HEADER : offset + HEADER + length].rstrip(b"\0").decode()
            offset += HEADER + length
            if wd not in watched or not name:
                continue
            path = os.path.join(watched[wd], name)
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    watch(path)
            else:
                check(path, mask)
    for root in temp_roots or roots:
        for current, _, files in os.walk(root):
            for name in files:
                path = os.path.join(current, name)
                if os.path.isfile(path) and (labels := holding(path, secrets)):
                    say(event="left", path=path, secret=labels[0])
    say(event="done")


main()
