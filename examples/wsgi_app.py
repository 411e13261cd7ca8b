"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi_app:app``.

Also runs under waitress: ``waitress-serve --threads 16 wsgi_app:app``.
"""

from __future__ import annotations

from _config import config_from_environment

from regcache_adapters.wsgi import create_app

app = create_app(config_from_environment())
