"""Every flowerbed knob with its default: the one place defaults are defined.

Override per group (group_data/<group>.py), per host (inventory) or per run
(`--data flower_max_tasks=5000`). flowerbed/settings/ validates every value before any host
is touched; a misspelt or unknown flower_* key is an error.
Secrets never go here or in an inventory: keys ending in `_env` name the environment variable
(from the operator's environment or .env, see .env.example) that holds the secret.
"""

# One line per knob, its comment beside it: kept whole even past the line length.
# ruff: noqa: E501
# fmt: off

# --- Package sources ------------------------------------------------------------------------
flower_egress_proxy = ""  # HTTP(S) proxy for apt and pip, e.g. "http://10.77.0.1:3128" ('' = direct)
flower_egress_ca_certificates = []  # local .pem/.crt files the hosts must trust (proxy/mirror CAs)
flower_pip_index_url = ""  # private PyPI mirror (simple API) for the venv ('' = pypi.org)

# --- Flower install -------------------------------------------------------------------------
flower_version = "2.2.0"  # Flower to run: installs locks/flower-<version>.txt (hash-pinned)
flower_user = "flower"  # static system user Flower runs as
flower_group = "flower"  # its group: owns the socket directory, members may connect
flower_socket_clients = ["www-data"]  # users put in flower_group: the reverse proxy (nginx)
flower_service = "flower"  # unit name; also /run/<service> (socket) and /var/lib/<service>
flower_config_dir = "/etc/flower"  # root-owned: flowerconfig.py, the 0600 env file, the 0600 proxy login
flower_install_dir = "/opt/flower"  # root-owned: venvs/<lock+app hash> and the `venv` link

# --- Celery app (-A) ------------------------------------------------------------------------
flower_app = ""  # Celery app for `celery -A`, e.g. "proj.celery:app" ('' = app-less mode)
flower_app_source = ""  # pip-installs the app: a local dir, "git+https://...@<commit>", "pkg==1.0"
# (installed with --no-deps: the app's own dependencies belong in the lock, locks/flower-<v>.in)
flower_app_workdir = ""  # Flower's working directory ('' = its state directory); only read, never made or chowned
flower_names_claimed = []  # names that exist on a host but flowerbed did not create, handed to Flower anyway: "user:NAME", "group:NAME", "unit:NAME", "dir:/PATH" (any other is refused, flowerbed/ownership.py)

# --- Secrets: names of environment variables, never values ---------------------------------
flower_broker_url_env = "FLOWERBED_BROKER_URL"  # holds the broker URL (with its password)
flower_broker_api_env = ""  # holds RabbitMQ's management API URL (broker_api), if any
flower_basic_auth = {}  # Flower's own basic auth: {"user": "ENV_VAR_WITH_PASSWORD"}
flower_oauth2_secret_env = ""  # holds the OAuth client secret (with flower_auth)
flower_cookie_secret_env = ""  # holds a fixed cookie secret ('' = new one, sessions end, on start)

# --- Flower options, under Flower's own names (flowerconfig.py) ------------------------------
flower_url_prefix = ""  # serve under /<prefix>/ (every route moves, /healthcheck included)
flower_max_tasks = 100000  # tasks kept in memory
flower_max_workers = 5000  # workers kept in memory
flower_purge_offline_workers = None  # seconds until offline workers are dropped (None = never)
flower_persistent = True  # keep task/worker history across restarts (db in the state directory)
flower_state_save_interval = 60000  # ms between state saves (0 = only on a clean stop)
flower_db = "flower"  # state file name in the state directory; dbm adds its own suffix
flower_read_only = False  # disable worker/task control from the UI and API
flower_natural_time = False  # show relative times ("5 minutes ago")
flower_tasks_columns = None  # tasks page columns, e.g. "name,uuid,state,runtime" (None = Flower's)
flower_inspect_timeout = 1000  # ms Flower waits for workers to answer an inspect
flower_enable_events = True  # periodically ask workers to send task events
flower_auto_refresh = True  # UI refreshes its tables by itself
flower_auth = ""  # OAuth: allowed e-mails "a@x.com|b@x.com" or "*@x.com" ('' = no OAuth)
flower_auth_provider = ""  # OAuth provider class, e.g. "flower.views.auth.GithubLoginHandler"
flower_oauth2_key = ""  # OAuth client id (not secret)
flower_oauth2_redirect_uri = ""  # OAuth callback, e.g. "https://flower.example.com/login"
# What the provider's login handler reads (Flower reads these from its environment):
flower_oauth2_okta_base_url = ""  # Okta (required): e.g. "https://x.okta.com/oauth2/default"
flower_github_oauth_domain = ""  # GitHub Enterprise's domain ('' = github.com)
flower_gitlab_oauth_domain = ""  # self-hosted GitLab's domain ('' = gitlab.com)
flower_gitlab_auth_allowed_groups = []  # GitLab: group full paths, e.g. ["acme/ops"] ([] = any)
flower_gitlab_min_access_level = 20  # GitLab: level needed in one of those groups (20 = reporter)

# --- Service --------------------------------------------------------------------------------
flower_unauthenticated_api = False  # stays False: True would open Flower's API to every process at its socket
flower_restart_sec = 5  # wait before restarting a crashed Flower
flower_start_limit_burst = 5  # at most this many starts ...
flower_start_limit_interval_sec = 300  # ... within this many seconds, then systemd gives up
flower_stop_timeout_sec = 30  # time to save state on stop before SIGKILL
flower_memory_max = ""  # Flower's memory ceiling, e.g. "2G" ('' = 128 MiB + 24 KiB per max_tasks)
flower_healthcheck_min_workers = 1  # the deploy fails a host whose Flower sees fewer workers
flower_healthcheck_timeout = 60  # seconds a (re)started Flower gets to become healthy

# --- Firewall (nftables table `inet flowerbed`; flowerbed/firewall.py) ------------------------
# New inbound connections are dropped unless listed here. Lists are IPv4/IPv6 CIDRs.
flower_allowed_sources = []  # who may reach HTTPS (the dashboard): REQUIRED, e.g. ["203.0.113.0/24"]
flower_admin_sources = []  # who may reach SSH (where you run pyinfra): REQUIRED, e.g. ["198.51.100.7/32"]
flower_acme_sources = ["0.0.0.0/0", "::/0"]  # who may reach HTTP/80: Let's Encrypt validates from anywhere
flower_firewall_ssh_port = 22  # the port sshd listens on, opened to flower_admin_sources
flower_firewall_rollback_seconds = 90  # undo a new ruleset unless a NEW ssh connection confirms it in time
# 0.0.0.0/0 or ::/0 in flower_admin_sources / flower_monitoring_sources is refused unless its switch says so:
flower_firewall_allow_ssh_from_anywhere = False  # True: flower_admin_sources may open SSH to the internet
flower_firewall_allow_metrics_from_anywhere = False  # True: flower_monitoring_sources may make /metrics public
# A host with a firewall of its own (ufw, firewalld, your nftables rules) may keep it alone:
flower_firewall_manage = True  # False: flowerbed loads no table (removes its own) and logs what must be open
# The host's other services: flowerbed's table drops every new inbound connection it does not list,
# so open each port other machines use, e.g. the broker for the workers' network:
#   [{"port": 6379, "protocol": "tcp", "sources": ["10.0.0.0/24"], "purpose": "Redis for the workers"}]
flower_firewall_openings = []  # port, protocol ("tcp" default, "udp"), sources (CIDRs), purpose
# A deploy that would close a port something listens on (beyond loopback) to every other machine is
# refused, naming the port and its process:
flower_firewall_close_listeners = []  # such ports you agree to close, e.g. ["8080/tcp", "5353/udp"]

# --- The edge: nginx, TLS, dashboard logins (flowerbed/edge.py) ----------------------------
# The site: https://<fqdn>/ (or /<flower_url_prefix>/), certificate for flower_fqdn + flower_server_aliases.
flower_fqdn = ""  # the dashboard's DNS name, per host in the inventory ('' = the host's inventory name)
flower_server_aliases = []  # more names for the same site, all on its certificate
# Inside your own site instead: Flower at https://<flower_fqdn>/<flower_url_prefix>/ in your HTTPS
# server block, with its certificate (no certbot, no port 80 site, no HSTS of flowerbed's). The
# server includes /etc/nginx/snippets/flowerbed-flower.conf (logins, CSRF guard, throttles,
# /metrics policy); zones and maps go in conf.d. Sources outside flower_allowed_sources get 403
# there; 443 and 80 are your site's: open them to its audience with flower_firewall_openings.
flower_existing_site = ""  # your file holding that server, e.g. "/etc/nginx/sites-available/app"
flower_existing_site_include = False  # True: flowerbed adds the include line (marked); False: prints it
flower_monitoring_sources = []  # CIDRs that reach HTTPS and read /metrics, /healthcheck without a login
flower_nginx_hsts_max_age = 63072000  # Strict-Transport-Security max-age, seconds (0 = no HSTS header)
flower_nginx_hsts_include_subdomains = False  # HSTS for every subdomain of the names too
flower_nginx_proxy_read_timeout = 60  # seconds nginx waits for Flower (above flower_inspect_timeout)
flower_nginx_server_snippets = []  # extra directives for the HTTPS server, e.g. ["access_log off;"]
# Snippets come from an allow-list (flowerbed/validation.py NGINX_ALLOWED: access_log off, gzip*,
# timeouts, buffer sizes, add_header of a few headers...): none can name a file or turn a limit off.
flower_nginx_server_snippets_unchecked = False  # DANGER: True lets ANY single directive through
# Logins are throttled per source address: past the burst, a source's next failed login (basic
# auth) gets 429 instead of 401 until its budget refills; every request also counts against a
# generous per-source limit checked before the password, so a flood cannot buy bcrypt CPU.
flower_nginx_login_failures_per_minute = 10  # failed logins per minute a source may make ...
flower_nginx_login_failures_burst = 5  # ... after this many at once; then 429 Too Many Requests
flower_nginx_requests_per_second = 5  # requests per second one source may make (UI polling: ~1) ...
flower_nginx_requests_burst = 50  # ... after this many at once (a page load); then 429
# Requests that have Flower ask every worker (`refresh=`, a worker's page or its controls) or
# hold a connection waiting for a task (`timeout=`, a task's apply) count in a budget of their
# own too (not for flower_admin_sources or loopback): Flower answers them one at a time, about
# one a second, so a flood of them would queue everyone's dashboard behind it.
flower_nginx_expensive_per_minute = 12  # such requests per minute one source may make ...
flower_nginx_expensive_burst = 5  # ... after this many at once; then 429
flower_nginx_connections_per_source = 20  # connections one source may hold open (then 429)
# A source (an IPv4 address; an IPv6 /64, for these and the throttles above) that keeps failing
# is banned by fail2ban (jail flowerbed-login) in nftables on ports 80 and 443, before bcrypt;
# never flower_admin_sources or loopback, and never on SSH.
flower_nginx_ban_failures = 10  # failed logins within the window that ban a source (0 = no ban)
flower_nginx_ban_window_seconds = 600  # ... the window (fail2ban's findtime)
flower_nginx_ban_seconds = 3600  # how long a ban lasts (fail2ban's bantime)
flower_tls_acme_directory = "letsencrypt"  # "letsencrypt", "letsencrypt-staging" or a directory URL
flower_tls_acme_ca_bundle = ""  # local CA bundle a private ACME directory's HTTPS needs ('' = system)
flower_tls_email = ""  # ACME account e-mail (expiry and policy notices; '' = register without)
flower_tls_challenge = "http-01"  # "http-01" (webroot on port 80) or "dns-01" (plugin or hook)
flower_tls_dns_plugin = ""  # DNS-01 via certbot's python3-certbot-dns-<plugin>, e.g. "cloudflare"
flower_tls_dns_credentials_env = ""  # holds the path of the plugin's credentials .ini (see .env.example)
flower_tls_dns_hook = ""  # DNS-01 via a local script run as `HOOK auth|cleanup` (certbot's manual hooks)
flower_auth_mode = "basic"  # "basic": logins at nginx (bcrypt); "oauth": Flower's OAuth (flower_auth)
flower_auth_users_env = "FLOWERBED_DASHBOARD_USERS"  # holds user:password[,user:password...]

# --- The operator's runs: verify.py and rotate.py (flowerbed/probe.py, verify.py, rotate.py) ---
# They check each dashboard over HTTPS from the operator's machine, with a login from .env.
flower_verify_ca_bundle = ""  # CA bundle those HTTPS checks trust ('' = the system's trust store)
flower_verify_summary_file = ""  # verify.py also writes a JSON summary here, for cron/CI ('' = none)
flower_verify_cert_min_days = 14  # certbot renews at 30 days left: fewer than this means it is failing
flower_verify_exposure_max = 1.5  # highest `systemd-analyze security` score Flower's unit may have
flower_verify_min_workers_online = 1  # fewer online workers than this is a problem
flower_verify_max_workers_offline = 0  # more offline workers (Flower still lists) is a problem
flower_verify_max_failed_tasks = 100  # more tasks than this failed in the last hour is a problem
flower_verify_max_task_seconds = 1800  # a task STARTED longer ago than this counts as stuck
flower_verify_max_queue_length = 1000  # more messages waiting in one queue is a problem
flower_verify_expected_tasks = []  # task names some online worker must have registered (e.g. in -A mode)

# --- Removal: remove.py takes flowerbed off a host (flowerbed/remove.py) ---------------------
flower_remove_packages = False  # True: also purge the apt packages flowerbed installed (recorded on install; others stay)
flower_remove_revoke_certificate = False  # True: revoke the certificate at its ACME directory before deleting it
flower_remove_keep_state = True  # Flower's state goes to /var/backups/flowerbed-<service>-<UTC time>.tar.gz (root 0600); False: deleted

# --- Rollout: python -m flowerbed.rollout changes the hosts batch by batch (flowerbed/rollout.py) ---
# The canary first and alone, then batches in inventory order; a batch runs only once every host
# of the one before passed the deploy's own checks (Flower's health check, nginx -t). Set them for
# every host (here or a group's data), or per run: --data flower_rollout_batch=5.
flower_rollout_batch = 1  # hosts changed together after the canary (1 = one dashboard down at a time)
flower_rollout_canary = ""  # inventory name of the host changed first and alone ('' = the first host)

# --- Monitoring: Prometheus, the blackbox exporter and Alertmanager on a host (issue 22) ------
# Off by default. Name the monitoring host for every host (here, or in your inventory's group
# data): it runs Debian's prometheus, prometheus-alertmanager and prometheus-blackbox-exporter,
# scrapes each dashboard naming it through nginx, probes their certificates and mails alerts;
# its address joins each dashboard's flower_monitoring_sources by itself. Prometheus and
# Alertmanager listen on 127.0.0.1 only (reach them over `ssh -L 9090:127.0.0.1:9090`).
flower_monitoring_host = ""  # the inventory name of the host that monitors this one ('' = none)
flower_monitoring_only = False  # True on a monitoring host that runs no dashboard of its own
flower_monitoring_address = ""  # the monitoring host's address as dashboards see it ('' = its ssh_hostname)
flower_monitoring_scrape_interval = "30s"  # how often Prometheus scrapes /metrics and probes HTTPS
flower_monitoring_evaluation_interval = "30s"  # how often Prometheus evaluates the alert rules
flower_monitoring_retention = "15d"  # how long Prometheus keeps its samples
flower_monitoring_rules = {}  # alert thresholds over the rules' defaults, e.g. {"expected_workers": "2"}
flower_monitoring_ca_bundle = ""  # local CA bundle of the dashboards' certificates ('' = the system's)
flower_monitoring_smtp_smarthost = ""  # SMTP server with STARTTLS, e.g. "smtp.example.com:587" ('' = no mail)
flower_monitoring_smtp_from = ""  # the alerts' sender, e.g. "alerts@example.com"
flower_monitoring_smtp_user = ""  # the SMTP login's user ('' = no login)
flower_monitoring_smtp_password_env = ""  # holds the SMTP login's password, e.g. "FLOWERBED_SMTP_PASSWORD"
flower_monitoring_smtp_ca_bundle = ""  # local CA bundle of the SMTP server's certificate ('' = the system's)
flower_monitoring_mail_to = []  # who gets the alerts, e.g. ["ops@example.com"]
flower_monitoring_webhook_url = ""  # also POST alerts to this webhook ('' = none)
flower_monitoring_group_wait = "30s"  # wait this long for more alerts of a group before its first mail
flower_monitoring_group_interval = "5m"  # wait this long before mailing a group's new alerts
flower_monitoring_repeat_interval = "4h"  # mail a still-firing alert again after this long

# --- More Flowers on the host -----------------------------------------------------------------
flower_instances = []  # more Flowers beside the main one: [{"name", "broker_env", "path", "logins_env", optional "app", "max_tasks", "healthcheck_min_workers"}] (docs/configuration.md)
# --- Taking over a hand-made Flower (issue 21) -----------------------------------------------
# Name the old Flower's unit and its --db state file: the deploy stops and disables that unit,
# moves its unit file, drop-ins and state to /var/backups/flowerbed-takeover-<unit>-<UTC>/
# (root-only) and copies its tasks into flowerbed's Flower. Both '' (the default): a Flower found
# running on the host fails that host before any change, with this fix filled in.
flower_takeover_unit = ""  # the old Flower's systemd unit, e.g. "flower-legacy.service" ('' = no takeover)
flower_takeover_state = ""  # the old Flower's --db, e.g. "/var/lib/flower/flower.db" ('' = no takeover)
