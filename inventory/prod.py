"""An example inventory for real servers: copy it, name your hosts, keep secrets in .env.

    cp .env.example .env && $EDITOR .env         # the broker URL (with its password) etc.
    pyinfra inventory/prod.py deploy.py --dry --diff   # preview; secrets never show
    pyinfra inventory/prod.py deploy.py -y

Every host is also in the group `prod` (this file's name): group_data/prod.py can hold
settings for all of them. Per-host data below overrides group data; `--data k=v` overrides
both. Only names of environment variables go here, never a secret's value.
"""

# Required for every host (here, in group_data/prod.py, or per host): who may reach what.
#
#   flower_allowed_sources = ["203.0.113.0/24", "2001:db8:10::/48"]   # your users: HTTPS
#   flower_admin_sources = ["198.51.100.7/32"]                        # where you run pyinfra: SSH
#   flower_monitoring_sources = ["192.0.2.50/32"]                     # Prometheus: /metrics
#   flower_tls_email = "ops@example.com"                              # Let's Encrypt account
#
# Hosts that reach PyPI through a proxy and trust its CA:
#
# dashboards = [
#     (
#         "flower-1.example.com",
#         {
#             "ssh_user": "deploy",
#             "_sudo": True,  # sudo must not ask for a password (pyinfra runs `sudo -n`)
#             # pin host keys: pyinfra otherwise trusts a host key on first use
#             "ssh_known_hosts_file": "inventory/known_hosts",
#             "ssh_strict_host_key_checking": "yes",
#             "flower_fqdn": "flower.example.com",  # the name browsers use and TLS covers
#             "flower_egress_proxy": "http://proxy.internal:3128",
#             "flower_egress_ca_certificates": ["inventory/certs/proxy-ca.pem"],
#         },
#     ),
#     (
#         "flower-2.example.com",
#         {
#             "ssh_user": "deploy",
#             "_sudo": True,
#             "ssh_known_hosts_file": "inventory/known_hosts",
#             "ssh_strict_host_key_checking": "yes",
#             "flower_pip_index_url": "https://pypi.internal/simple/",  # a private mirror
#             "flower_app": "proj.celery:app",  # show proj's registered tasks
#             "flower_app_source": "git+https://git.example.com/proj.git@v1.4.2",
#             "flower_broker_url_env": "PROJ_BROKER_URL",  # another broker, another variable
#         },
#     ),
# ]
dashboards = []

# Optional (off by default): a monitoring host (docs/monitoring.md). Each dashboard names it in
# flower_monitoring_host (add the key to their data, or to group_data/prod.py for all); it runs
# Prometheus, the blackbox exporter and Alertmanager, scrapes them through nginx (its address
# joins their flower_monitoring_sources by itself) and mails their alerts. The SMTP password is
# in .env under the name flower_monitoring_smtp_password_env gives.
#
# monitoring = [
#     (
#         "monitor.example.com",
#         {
#             "ssh_user": "deploy",
#             "_sudo": True,
#             "ssh_known_hosts_file": "inventory/known_hosts",
#             "ssh_strict_host_key_checking": "yes",
#             "flower_monitoring_host": "monitor.example.com",  # itself
#             "flower_monitoring_only": True,  # runs no dashboard of its own
#             "flower_monitoring_smtp_smarthost": "smtp.example.com:587",  # STARTTLS, a login
#             "flower_monitoring_smtp_from": "alerts@example.com",
#             "flower_monitoring_smtp_user": "alerts@example.com",
#             "flower_monitoring_smtp_password_env": "FLOWERBED_SMTP_PASSWORD",
#             "flower_monitoring_mail_to": ["ops@example.com"],
#             "flower_monitoring_webhook_url": "",  # e.g. a chat bridge, too
#         },
#     ),
# ]
monitoring = []
