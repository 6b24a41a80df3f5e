"""deploy.py with some of flowerbed's templates shadowed by the files in the directory
$FLOWERBED_TEST_TEMPLATES: for the tests that need a broken template (tests/lab/test_faults.py)."""

import os
import runpy
from pathlib import Path

from jinja2 import ChoiceLoader, FileSystemLoader

from flowerbed import render

_environment = render._environment()
if not isinstance(_environment.loader, ChoiceLoader):  # once: every host runs this file
    _shadow = FileSystemLoader(os.environ["FLOWERBED_TEST_TEMPLATES"])
    _environment.loader = ChoiceLoader([_shadow, _environment.loader])

runpy.run_path(str(Path(__file__).resolve().parents[2] / "deploy.py"))
