"""Root-owned files and directories: the shape most of flowerbed's host files take."""

from io import StringIO

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files


def root_file(name: str, src: str | StringIO, dest: str, mode: str = "644") -> OperationMeta:
    """`dest` holds `src`, owned by root."""
    return files.put(name=name, src=src, dest=dest, user="root", group="root", mode=mode)


def root_directory(name: str, path: str, mode: str = "755") -> OperationMeta:
    """`path` is a directory owned by root."""
    return files.directory(name=name, path=path, user="root", group="root", mode=mode)
