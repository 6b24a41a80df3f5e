"""The input layer: what a deploy reads from the operator's machine (the host's data is
flowerbed.settings), checked before any host changes, and nothing here changes a host.

- secrets: the operator's secrets, from the environment or .env (ENV_FILE_VARIABLE)
- logins: the dashboard's logins (flower_auth_users_env)
- edge: the site's names, its logins and the DNS plugin's credentials, for one host
- instances: each flower_instances' broker URL and logins, and its names and paths

flowerbed.preflight checks every host's inputs with these; the deploy modules take what they
return.
"""
