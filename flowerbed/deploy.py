"""flowerbed's deploys: everything in one call, or one part at a time.

In a pyinfra deploy of your own (after `pip install flowerbed`):

    from flowerbed import deploy_flowerbed

    deploy_flowerbed()

Each deploy carries every key's default (`data_defaults`, flowerbed/defaults.py): set only
what has no safe default, in your inventory or group data:

    flower_allowed_sources = ["203.0.113.0/24"]   # who reaches the dashboard (HTTPS)
    flower_admin_sources = ["198.51.100.7/32"]    # where you run pyinfra from (SSH)
    flower_fqdn = "flower.example.com"            # per host ('' = the host's inventory name)
    flower_tls_email = "ops@example.com"          # optional: the ACME account's e-mail

and the secrets in the environment (or .env) under the names the `*_env` keys give:
FLOWERBED_BROKER_URL and FLOWERBED_DASHBOARD_USERS by default (see .env.example).

Every targeted host's data and secrets are checked before any host is changed; relative paths
in data are relative to the directory pyinfra runs in (flowerbed/resources.py).
"""

from __future__ import annotations

from pyinfra import host, inventory
from pyinfra.api import deploy

from .edge import edge
from .existing_site import existing_site_checked
from .firewall import inbound_firewall, other_services_kept
from .flower import flower_service, install_flower, remove_old_venvs
from .healthcheck import verify_flower
from .instances import (
    flower_instances,
    instances_dropped,
    instances_healthy,
    instances_names_checked,
)
from .ownership import names_claimed
from .packages import package_sources
from .preflight import Checked, checked
from .pyinfra_internals import install
from .resources import DEFAULTS
from .takeover import other_flower_checked, ports_closing_check, take_over, takeover_names


def this_host() -> Checked:
    """The current host's checked settings and secrets (every targeted host checked once).
    Every deploy starts here: flowerbed's shortcuts into pyinfra are installed first."""
    install()
    return checked(host, inventory)


def host_edge(checked_host: Checked) -> None:
    """The edge with this host's sections and inputs (the whole deploy's, and deploy_edge)."""
    settings = checked_host.settings
    edge(
        settings.dashboard_proxy,
        settings.site,
        settings.tls,
        settings.auth,
        checked_host.edge,
        checked_host.instances,
    )


@deploy("flowerbed", data_defaults=DEFAULTS)
def deploy_flowerbed() -> None:
    """Flower behind nginx with TLS and logins, a firewall, and a health check: every part
    below, in order. Data keys: every key in flowerbed/defaults.py. Required:
    flower_allowed_sources, flower_admin_sources; secrets: $FLOWERBED_BROKER_URL and (basic
    auth) $FLOWERBED_DASHBOARD_USERS. flower_instances adds more Flowers beside the main one;
    one dropped from it leaves the host (its state backed up: flower_remove_keep_state).

    + Example:

    .. code:: python

        from flowerbed import deploy_flowerbed

        deploy_flowerbed()
    """
    checked_host = this_host()
    settings = checked_host.settings
    # refused before any change, the names last: their check writes its record
    other_flower_checked(settings.takeover)
    other_services_kept(settings.firewall, ports_closing_check(settings.takeover))
    existing_site_checked(settings.site, checked_host.edge.site.fqdn)
    instances_names_checked(settings.instances, settings.flower)
    names_claimed(settings.flower, takeover_names(settings.takeover, settings.flower))
    package_sources(settings.egress)
    inbound_firewall(settings.firewall)
    installed = install_flower(settings.flower, settings.egress)
    take_over(settings.takeover, settings.flower, settings.options)
    run = settings.flower_run
    flower_service(run, settings.oauth_provider, checked_host.secrets, installed)
    flower_instances(run, checked_host.instances, installed)
    host_edge(checked_host)
    instances_dropped(settings.instances, settings.flower, settings.remove)
    verify_flower(run, after_changes_only=True)
    instances_healthy(settings.instances, run)
    remove_old_venvs(settings.flower, installed)


@deploy("flowerbed: package sources", data_defaults=DEFAULTS)
def deploy_package_sources() -> None:
    """How the host reaches apt and PyPI: an egress proxy, extra CAs to trust, a PyPI mirror.

    + flower_egress_proxy: HTTP(S) proxy for apt and pip ('' = direct)
    + flower_egress_ca_certificates: local .pem/.crt files the host must trust
    + flower_pip_index_url: a private PyPI mirror ('' = pypi.org)

    + Example:

    .. code:: python

        from flowerbed.deploy import deploy_package_sources

        deploy_package_sources()
    """
    package_sources(this_host().settings.egress)


@deploy("flowerbed: firewall", data_defaults=DEFAULTS)
def deploy_firewall() -> None:
    """The nftables table `inet flowerbed`: new inbound connections only from the listed
    sources; a ruleset that would lock the operator out is rolled back.

    + flower_allowed_sources: who reaches HTTPS, the dashboard (required)
    + flower_admin_sources: who reaches SSH, where pyinfra runs (required)
    + flower_acme_sources: who reaches HTTP/80 (the ACME challenge, the redirect)
    + flower_monitoring_sources: who reaches HTTPS and reads /metrics without a login
    + flower_firewall_ssh_port: the port sshd listens on
    + flower_firewall_rollback_seconds: undo a ruleset no new SSH connection confirms in time
    + flower_firewall_allow_ssh_from_anywhere: let flower_admin_sources hold 0.0.0.0/0 or ::/0
    + flower_firewall_allow_metrics_from_anywhere: the same for flower_monitoring_sources
    + flower_firewall_openings: more ports to open, for the host's other services
    + flower_firewall_close_listeners: listening ports you agree the ruleset closes (a deploy
      that would close a listening port otherwise fails the host before any firewall change)
    + flower_firewall_manage: False leaves the firewall to the host's own (ufw, firewalld...):
      flowerbed's table is removed and what must be open is logged

    + Example:

    .. code:: python

        from flowerbed.deploy import deploy_firewall

        deploy_firewall()
    """
    settings = this_host().settings
    other_services_kept(settings.firewall, ports_closing_check(settings.takeover))
    inbound_firewall(settings.firewall)


@deploy("flowerbed: Flower", data_defaults=DEFAULTS)
def deploy_flower() -> None:
    """Flower from a hash-pinned lock in its own venv, as a hardened systemd service on a unix
    socket; then its health check (after a change, or when Flower is not running), then old
    venvs go.

    + flower_version, flower_user, flower_group, flower_socket_clients, flower_service,
      flower_config_dir, flower_install_dir: what is installed where, run as whom
    + flower_app, flower_app_source, flower_app_workdir: the Celery app (-A), if any
    + flower_names_claimed: names that exist on the host, not created by flowerbed, handed to
      Flower anyway (any other is refused before a change: flowerbed/ownership.py)
    + flower_broker_url_env, flower_broker_api_env, flower_basic_auth,
      flower_oauth2_secret_env, flower_cookie_secret_env: variables holding the secrets
    + flower_url_prefix, flower_max_tasks, flower_max_workers, flower_purge_offline_workers,
      flower_persistent, flower_state_save_interval, flower_db, flower_read_only,
      flower_natural_time, flower_tasks_columns, flower_inspect_timeout,
      flower_enable_events, flower_auto_refresh, flower_auth, flower_auth_provider,
      flower_oauth2_key, flower_oauth2_redirect_uri: Flower's own options
    + flower_oauth2_okta_base_url, flower_github_oauth_domain, flower_gitlab_oauth_domain,
      flower_gitlab_auth_allowed_groups, flower_gitlab_min_access_level: OAuth providers
    + flower_unauthenticated_api, flower_restart_sec, flower_start_limit_burst,
      flower_start_limit_interval_sec, flower_stop_timeout_sec: the service
    + flower_memory_max: its memory ceiling (with flower_max_tasks: flowerbed/memory.py)
    + flower_healthcheck_min_workers, flower_healthcheck_timeout: the health check
    + flower_instances: more Flowers beside the main one, each with its own unit, socket,
      state, logins and path (flowerbed/instances.py)
    + flower_takeover_unit, flower_takeover_state: a hand-made Flower to take over (without
      them, another Flower running on the host fails it before any change)

    + Example:

    .. code:: python

        from flowerbed.deploy import deploy_flower

        deploy_flower()
    """
    checked_host = this_host()
    settings = checked_host.settings
    # refused before any change, the names last: their check writes its record
    other_flower_checked(settings.takeover)
    instances_names_checked(settings.instances, settings.flower)
    names_claimed(settings.flower, takeover_names(settings.takeover, settings.flower))
    installed = install_flower(settings.flower, settings.egress)
    take_over(settings.takeover, settings.flower, settings.options)
    run = settings.flower_run
    flower_service(run, settings.oauth_provider, checked_host.secrets, installed)
    flower_instances(run, checked_host.instances, installed)
    verify_flower(run, after_changes_only=True)
    instances_healthy(settings.instances, run)
    remove_old_venvs(settings.flower, installed)


@deploy("flowerbed: edge", data_defaults=DEFAULTS)
def deploy_edge() -> None:
    """What a browser meets: nginx on 80 (ACME, redirect) and 443, the certificate, the logins.

    + flower_fqdn, flower_server_aliases: the site's names, all on its certificate
    + flower_existing_site, flower_existing_site_include: Flower inside your own site instead
    + flower_nginx_hsts_max_age, flower_nginx_hsts_include_subdomains,
      flower_nginx_proxy_read_timeout, flower_nginx_server_snippets (from an allow-list;
      flower_nginx_server_snippets_unchecked = True lets any directive through): the HTTPS site
    + flower_nginx_login_failures_per_minute, flower_nginx_login_failures_burst,
      flower_nginx_requests_per_second, flower_nginx_requests_burst,
      flower_nginx_expensive_per_minute, flower_nginx_expensive_burst,
      flower_nginx_connections_per_source: throttles per source (an IPv6 /64 is one)
    + flower_nginx_ban_failures, flower_nginx_ban_window_seconds, flower_nginx_ban_seconds:
      fail2ban bans a source that keeps failing to log in (ports 80 and 443)
    + flower_tls_acme_directory, flower_tls_acme_ca_bundle, flower_tls_email,
      flower_tls_challenge, flower_tls_dns_plugin, flower_tls_dns_credentials_env,
      flower_tls_dns_hook: the certificate
    + flower_auth_mode, flower_auth_users_env: who logs in, where; with logins at nginx every
      htpasswd (the main one and each instance's) ends with the decoy's line, and the users
      map (/etc/nginx/flowerbed-users.map) with Debian's headers-more module sends any other
      name to the decoy: an unknown name costs one bcrypt check, as a known one does
    + flower_monitoring_sources: who reads /metrics and /healthcheck without a login
    + flower_instances: each instance's locations, logins and socket in the site

    + Example:

    .. code:: python

        from flowerbed.deploy import deploy_edge

        deploy_edge()
    """
    checked_host = this_host()
    existing_site_checked(checked_host.settings.site, checked_host.edge.site.fqdn)
    host_edge(checked_host)


@deploy("flowerbed: health check", data_defaults=DEFAULTS)
def deploy_health_check() -> None:
    """Fails the host unless Flower answers on its socket and sees enough workers.

    + flower_healthcheck_min_workers: fewer workers online fails the host
    + flower_healthcheck_timeout: seconds a (re)started Flower gets to become healthy

    + Example:

    .. code:: python

        from flowerbed.deploy import deploy_health_check

        deploy_health_check()
    """
    verify_flower(this_host().settings.flower_run)


PARTS = (
    deploy_package_sources,
    deploy_firewall,
    deploy_flower,
    deploy_edge,
    deploy_health_check,
)
