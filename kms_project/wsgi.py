"""The web processes' WSGI application: Django, with the data plane in front of it for the
service-key operations unless KCM_DATAPLANE=django (docs/dataplane.md)."""

import os
from typing import Any

from django.core.wsgi import get_wsgi_application

from kms_project.env import env_choice

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")

django_application = get_wsgi_application()
application: Any = django_application
if env_choice("KCM_DATAPLANE", ("fast", "django"), "fast") == "fast":
    from apps.keychain.dataplane import DataPlane

    application = DataPlane(django_application)
