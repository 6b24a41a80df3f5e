"""flowerbed: Celery Flower in production on Debian hosts, deployed with pyinfra.

One module per concern, each with @deploy functions that read the validated settings:
settings (the data model), secrets (operator secrets, the no-diff secret file), packages
(apt/pip egress), venv (locked venvs), flower (install, configure, run), verify (health).
deploy.py at the repository root calls them in order.
"""
