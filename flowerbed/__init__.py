"""flowerbed: Celery Flower in production on Debian hosts, deployed with pyinfra.

    from flowerbed import deploy_flowerbed

    deploy_flowerbed()      # Flower, the edge (nginx, TLS, logins), the firewall, a health check

The deploys (flowerbed.deploy: deploy_flowerbed and its parts, one at a time) read the host's
data over the defaults shipped in the package; a consumer sets only what has no safe default.

Modules, one concern each:
- deploy: the deploys a consumer calls; defaults: every data key's default (group_data/all.py)
- resources: the package data (templates/, files/, locks/) and the base of relative paths
- settings: the validated data model, one module per concern (checks: the shared checks;
  egress, flower, firewall, edge, oauth, verify, remove, instances, takeover: their
  sections and rules); validation: its rules and error reporting
- inputs: what a deploy reads on the operator's machine, checked, changing no host (secrets:
  the environment or .env; logins: the dashboard's; edge: the site's names, its logins, the DNS
  credentials; instances: each instance's broker URL and logins)
- preflight: every host's data and inputs checked before any host changes (it imports the input
  layer, no deploy module)
- secrets: the no-diff secret file; quiet: secret files compared or read on a host without
  printing them, in one round trip
- packages: apt and pip egress (proxy, CAs, mirror); venv: the locked venvs
- flower: Flower's install, configuration and service; instances: more Flowers on the host
  (flower_instances), each its own unit, socket, state, logins and path, removed when dropped;
  takeover: a hand-made Flower taken over (flower_takeover_*), and any other Flower refused
  before a change; memory: its memory ceiling (flower_memory_max) and the verdict of verify's
  memory layer; memory_watchdog: the watchdog that runs inside Flower and restarts it cleanly
  at the ceiling; socket_keeper: runs inside Flower too, and hands its listening socket to
  systemd, which keeps it across restarts (a request made meanwhile waits, never fails);
  hooks: how flowerconfig.py starts those two
- ownership: Flower's user, group, unit and directories decided from the host (created by
  flowerbed per its record, or claimed), refused before any change otherwise
- proxy_login: Flower's own login, which only nginx holds (logins at nginx)
- firewall: the nftables table with its rollback; listeners: what else listens on the host,
  which a new ruleset must not close unless declared
- edge: nginx, TLS, logins, in order; nginx: the sites; existing_site: Flower inside the
  operator's own nginx site; tls: the certificate (certbot); auth: the dashboard's logins;
  decoy: an unknown login name costs one bcrypt check like a known one; ban: fail2ban's jail
  for sources that keep failing to log in
- healthcheck: Flower's health check in a deploy; verify: the fleet check (verify.py): each
  host's layers; fleet_report: the verdicts it records and the fleet's table and JSON; probe:
  HTTPS checks from the operator's machine; rotate: secret rotation (rotate.py); env_file: the
  operator's .env, locked and written atomically; remove: flowerbed taken off a host
  (remove.py); rollout: a change rolled out batch by batch, canary first (python -m
  flowerbed.rollout)
- runs: the operator's runs (deploy, verify, rotate, remove) that the repository's files call
  and a project with only the wheel runs by name (`pyinfra INVENTORY flowerbed.runs.verify`)
- render: the templates; hostfiles: root-owned files; shell: commands as argument lists
- facts: what the operations ask of a host, fetched in one round trip; units: systemd units
  enabled and running, from those facts; pyinfra_internals: every use of pyinfra outside its
  public API (the operation order without source reads, the SSH socket that sends small
  packets at once...), each applied only on the pyinfra it was written against
- monitoring: Prometheus, the blackbox exporter and Alertmanager on the host the dashboards name
  (flower_monitoring_host); alert_rules: flowerbed's Prometheus rules and their thresholds;
  monitoring_verify: verify.py's layers for that host
"""


def __getattr__(name: str):
    # imported on first use: `import flowerbed.settings` stays free of the deploy's imports
    if name == "deploy_flowerbed":
        from .deploy import deploy_flowerbed

        return deploy_flowerbed
    raise AttributeError(f"module 'flowerbed' has no attribute {name!r}")


__all__ = ["deploy_flowerbed"]
