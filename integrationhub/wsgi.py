"""The WSGI entry point: `gunicorn integrationhub.wsgi` (bin/serve, deploy/integrationhub-web.service)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
application = get_wsgi_application()
