"""Code flowerbed runs inside Flower: module files in Flower's config directory, each started by
a block that flowerconfig.py ends with (Flower executes that file: tornado's parse_config_file).

- memory_watchdog.py: the memory ceiling's watchdog (flowerbed/memory.py);
- socket_keeper.py: the listening socket systemd keeps across restarts.

No pyinfra here: the settings import it.
"""

from __future__ import annotations

KEEPER_FILE = "socket_keeper.py"
WATCHDOG_FILE = "memory_watchdog.py"
HOOK_FILES = (KEEPER_FILE, WATCHDOG_FILE)  # in the order flowerconfig.py starts them

HOOK_START = """
# flowerbed's {module}, {path}: started only inside the Flower
# that runs with this file as its --conf; a tool that reads this file starts nothing. Its name
# is deleted below, so none reaches Flower's options.
def _{module}():
    import sys

    if {argument!r} not in sys.argv or {module!r} in sys.modules:
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location({module!r}, {path!r})
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.start(
{arguments}    )


_{module}()
del _{module}
"""


def hook_path(config_dir: str, file: str) -> str:
    return f"{config_dir}/{file}"


def hook_paths(config_dir: str) -> tuple[str, ...]:
    return tuple(hook_path(config_dir, file) for file in HOOK_FILES)


def hook_block(file: str, config_file: str, **arguments: object) -> str:
    """The lines that start `file` (in the directory of `config_file`, one Flower's
    flowerconfig.py) with `arguments`, inside the process started with `--conf=<config_file>`
    only."""
    module = "flowerbed_" + file.removesuffix(".py")
    return HOOK_START.format(
        module=module,
        path=hook_path(config_file.rpartition("/")[0], file),
        argument=f"--conf={config_file}",
        arguments="".join(f"        {name}={value!r},\n" for name, value in arguments.items()),
    )


def hook_source(file: str) -> str:
    """The module's file as the host gets it (this package's own)."""
    from .resources import package_path

    return package_path(file).read_text()
