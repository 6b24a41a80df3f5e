"""Secrets written only to root-only files: `secret_file` writes a value read from the
operator's environment (flowerbed.inputs.secrets) to a host, created 0600 before any byte lands
in it, changed only when its content differs, and never shown in --diff, -vvv, --json or the
operation list.
"""

from __future__ import annotations

from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation
from pyinfra.api.operation import OperationMeta

from . import facts, quiet
from .hostfiles import PathStates
from .inputs.secrets import Secret
from .pyinfra_internals import current_op_arguments
from .shell import command

PRIVILEGE_ARGUMENTS = ("_sudo", "_doas", "_su_user")


def checked_secret_file(name: str, path: str, content: Secret, **arguments) -> OperationMeta:
    """secret_file, its state and content checked with the host's other facts and compares
    (flowerbed.facts, flowerbed.quiet): no round trip of its own on a run that changes nothing."""
    facts.expect(PathStates, paths=(path,), digests=False)
    quiet.expect_compare(path, content.value.encode())
    return secret_file(name=name, path=path, content=content, **arguments)


@operation()
def secret_file(
    path: str, content: Secret, user: str = "root", group: str = "root", mode: int = 600
):
    """
    Ensure `path` holds `content`, mode 0600 (or `mode`, e.g. 640 for a group that reads it),
    owned by user:group, without ever showing it.

    The file is created empty with mode 0600 before the upload writes into it, then moved into
    place: at no point is there a readable copy. Nothing about the content reaches pyinfra's
    output except that it changed.
    """
    if not isinstance(content, Secret):
        raise TypeError("secret_file takes a Secret, so its value can never be printed")
    desired = content.value.encode()
    remote = facts.ask(PathStates, paths=(path,), digests=False).get(path)
    same_content = bool(remote) and quiet.holds(path, desired)
    same_owner = bool(remote) and (remote.user, remote.group) == (user, group)
    if same_content and same_owner and remote.mode == int(str(mode), 8):
        host.noop(f"{path} is up to date (content not shown)")
        return
    if same_content:
        yield command("chown", f"{user}:{group}", path)
        yield command("chmod", f"0{mode}", path)
        return

    host.log(f"{'Will update' if remote else 'Will create'} {path} (secret: content not shown)")
    staging = f"{path}.flowerbed-new"
    yield command("install", "-m", "0600", "-o", user, "-g", group, "/dev/null", staging)
    yield from _upload_into(staging, desired)
    if mode != 600:
        yield command("chmod", f"0{mode}", staging)
    yield command("mv", "-f", staging, path)


def _upload_into(existing_0600_file: str, content: bytes):
    """Upload into a file that is already 0600: an upload never creates a readable file."""
    arguments = current_op_arguments(host) or {}
    temp_file = None
    if any(arguments.get(key) for key in PRIVILEGE_ARGUMENTS):
        # pyinfra uploads as the login user to a temp file, then copies it with sudo/su:
        # create that temp file 0600 as the login user first.
        temp_file = host.get_temp_filename(existing_0600_file)
        unprivileged = {"_sudo": False, "_doas": False, "_su_user": None}
        yield command("install", "-m", "0600", "/dev/null", temp_file, **unprivileged)
    yield FileUploadCommand(BytesIO(content), existing_0600_file, remote_temp_filename=temp_file)
