"""WSGI entry point, served by gunicorn (bin/serve web): the API, the dashboard and the admin."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labmanager.settings")
application = get_wsgi_application()
