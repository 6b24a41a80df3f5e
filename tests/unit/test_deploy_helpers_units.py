"""The test helpers themselves: a check that cannot fail is no check."""

from __future__ import annotations

import json

import pytest
from deploy_helpers import DeployResult, grand_total


def result_with(operations: list[dict]) -> DeployResult:
    report = {"plan": [], "results": {"operations": operations, "totals": {}}}
    return DeployResult(["pyinfra"], 0, json.dumps(report), "", 1.0)


def test_changed_hosts_names_the_hosts_an_operation_changed():
    result = result_with(
        [
            {"name": "Restart Flower (config changed)", "success": ["h2"], "no_change": ["h1"]},
            {"name": "Reload systemd", "success": [], "no_change": ["h1", "h2"]},
        ]
    )
    assert result.changed_hosts("Restart Flower") == ["h2"]
    assert result.changed_hosts("Reload systemd") == []


def test_an_operation_that_never_ran_is_an_error_not_an_empty_list():
    result = result_with([{"name": "Restart Flower", "success": [], "no_change": ["h1"]}])
    with pytest.raises(AssertionError, match="no operation named like 'Restart Flowers'"):
        result.changed_hosts("Restart Flowers")


RESULTS = """\
--> Results:
    \x1b[1mOperation\x1b[0m                        Hosts   Success   Error   No Change
    Install Flower                   1       -         -       1
    Restart Flower (config changed)  1       1         -       -
    Grand total                      2       1         -       1
"""


def test_grand_total_reads_pyinfras_last_row_of_results():
    assert grand_total(RESULTS) == {"hosts": "2", "success": "1", "error": "-", "no_change": "1"}
    with pytest.raises(ValueError):  # no row (a run that stopped before its results)
        grand_total(RESULTS.replace("Grand total", "Subtotal"))
