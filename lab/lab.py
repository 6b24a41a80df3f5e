#!/usr/bin/env python3
"""flowerbed's lab on the command line; the lab itself is the package lab/labkit.

python3 lab/lab.py up [--hosts N] [--distro bookworm|trixie]
python3 lab/lab.py host-up NAME | host-down NAME | oidc-up | down | status | ssh NAME [CMD...]
"""

import sys

from labkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
