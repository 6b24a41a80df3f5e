"""The baseline for benchmarks/converge.py: pyinfra's own cost of one no-op operation (one
fact) on the same inventory and hosts as the deploy: start, inventory, connect, one round trip."""

from pyinfra.operations import files

files.directory(name="One no-op operation (the baseline)", path="/etc")
