"""The one command that compares and reads secret files (flowerbed/quiet.py), run here with
`sh` on real files: what a host runs, without the lab."""

from __future__ import annotations

import base64
import subprocess

from flowerbed import quiet


def run_here(asks: list[quiet.Ask]) -> dict:
    command, stdin = quiet.script(asks)
    lines = "".join(f"{line}\n" for line in stdin)  # how pyinfra writes _stdin
    output = subprocess.run(
        ["sh", "-c", command.get_raw_value()], input=lines, capture_output=True, text=True
    )
    assert output.returncode == 0, output.stderr
    return quiet.answers(asks, output.stdout.splitlines())


def test_compares_and_reads_in_one_command(tmp_path):
    env, htpasswd, missing = tmp_path / "flower.env", tmp_path / "htpasswd", tmp_path / "nope"
    env.write_bytes(b'CELERY_BROKER_URL="redis://:s3cret@broker:6379/0"\n')
    htpasswd.write_text("alice:$2b$10$abc\nbob:$2b$10$def\n")
    asks = [
        ("compare", str(env), env.read_bytes()),
        ("read", str(htpasswd), b""),
        ("compare", str(env), b"something else\n"),
        ("compare", str(missing), b""),
        ("read", str(missing), b""),
        ("compare", str(htpasswd), htpasswd.read_bytes()),
    ]
    assert list(run_here(asks).values()) == [
        True,
        "alice:$2b$10$abc\nbob:$2b$10$def\n",
        False,
        False,
        "",
        True,
    ]


def test_content_that_is_not_one_line_or_text(tmp_path):
    odd = bytes(range(256)) + b"\n\n  trailing  \n"
    path = tmp_path / "odd"
    path.write_bytes(odd)
    assert run_here([("compare", str(path), odd)]) == {("compare", str(path), odd): True}
    assert run_here([("compare", str(path), odd[:-1])])[("compare", str(path), odd[:-1])] is False


def test_nothing_secret_is_in_the_command(tmp_path):
    secret = b"Sup3r-s3cret-broker-password"
    command, stdin = quiet.script([("compare", str(tmp_path / "f"), secret)])
    assert secret.decode() not in command.get_raw_value()
    encoded = base64.b64encode(secret).decode()
    assert encoded not in command.get_raw_value()  # nor its base64: that goes over stdin
    assert stdin == [encoded]
