"""Renders the files flowerbed writes to hosts from templates/ (one template per file)."""

from functools import cache

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .resources import TEMPLATES


def systemd_quote(value: str) -> str:
    """A value for a systemd EnvironmentFile: double-quoted, backslash-escaped."""
    if "\n" in value or "\r" in value:
        raise ValueError("a systemd environment value cannot span lines")
    escaped = "".join("\\" + c if c in '\\"`$' else c for c in value)
    return f'"{escaped}"'


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["systemd_quote"] = systemd_quote
    env.filters["py"] = repr
    return env


def render(template: str, **context) -> str:
    return _environment().get_template(template).render(**context)
