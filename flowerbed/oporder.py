"""pyinfra's operation order, from the call stack without reading source files.

In CLI mode pyinfra orders each operation by the line numbers of its call stack from the
deploy file down (`pyinfra.api.util.get_operation_order_from_stack`). It gets them with
`inspect.stack()` and `getframeinfo()`, which open every frame's source file and search
`sys.modules` for its module, twice per frame and once per operation per host: on a no-op of
10 hosts that was the largest part of the controller's CPU (flowerbed's operations are called
a few functions deep). The same line numbers come from walking the frames themselves
(`f_code.co_filename`, `f_lineno`: what `getframeinfo` returns for a frame).

`install()` puts `operation_order` in the place pyinfra calls it from (once; the result is the
same for every operation, flowerbed's or not). tests/unit/test_speed_units.py checks that both
give the same order.
"""

from __future__ import annotations

import importlib
import sys

import pyinfra
from pyinfra.api.state import State
from pyinfra.api.util import PYINFRA_INSTALL_DIR, get_operation_order_from_stack

PYINFRAS_OWN = get_operation_order_from_stack


def operation_order(state: State, frame=None) -> list[int]:
    """The line numbers pyinfra's `get_operation_order_from_stack` gives for this call stack:
    the calls from the first frame in the deploy file down, pyinfra's own frames left out."""
    frames = []
    frame = frame or sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()

    start = 0
    if state.current_deploy_filename:
        # not found: pyinfra keeps only the innermost frame, its own, which it then leaves out
        start = next(
            (i for i, outer in enumerate(frames)
             if outer.f_code.co_filename == state.current_deploy_filename),
            len(frames),
        )  # fmt: skip

    line_numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    line_numbers += [
        outer.f_lineno
        for outer in frames[start:]
        if not outer.f_code.co_filename.startswith(PYINFRA_INSTALL_DIR)
    ]
    return line_numbers


def install() -> None:
    """Have pyinfra order operations with `operation_order` (idempotent)."""
    # the module: `pyinfra.api.operation` as an attribute is the decorator of that name
    importlib.import_module(
        "pyinfra.api.operation"
    ).get_operation_order_from_stack = operation_order
