"""WSGI entry point of the example project (``gunicorn djshop.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djshop.settings")
application = get_wsgi_application()
