#!/usr/bin/env python3
"""Print how to reach the lab's dashboards after `make demo`: URLs, login, CA to trust."""

import json
import runpy
import ssl
import urllib.request
from base64 import b64encode
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"


def main() -> None:
    state = json.loads((LAB / "state.json").read_text())
    secrets = dict(
        line.split("=", 1)
        for line in (LAB / "lab.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    user, password = secrets["FLOWERBED_DASHBOARD_USERS"].split(",")[0].split(":", 1)
    prefix = runpy.run_path(str(REPO / "group_data" / "all.py")).get("flower_url_prefix", "")
    path = f"/{prefix.strip('/')}/" if prefix.strip("/") else "/"
    root = state["acme"]["root"]
    context = ssl.create_default_context(cafile=root)
    auth = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
    print("\nflowerbed demo: Flower behind Nginx with TLS from the lab's ACME CA\n")
    for host in state["hosts"]:
        url = f"https://{host['fqdn']}{path}"
        request = urllib.request.Request(url + "api/workers", headers={"Authorization": auth})
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                workers = ", ".join(json.load(response)) or "none yet"
            status = f"OK, workers: {workers}"
        except Exception as error:  # report, don't hide: the demo shows what a client sees
            status = f"not answering: {error}"
        print(f"  {url:40} {status}")
    print(f"\n  login:   {user} / {password}   (from .lab/lab.env)")
    print(f"  CA:      {root}   (the lab CA's root; pass it to curl --cacert or import it)")
    print(
        f"  example: curl --cacert {root} -u {user}:PASSWORD "
        f"https://{state['hosts'][0]['fqdn']}{path}api/workers\n"
    )


if __name__ == "__main__":
    main()
