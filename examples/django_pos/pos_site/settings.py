"""Settings of the example POS; each till is configured from the environment.

``POS_DIR`` (where the store file and the auth database go, default: here),
``POS_TENANT``, ``POS_REPLICA``, ``POS_LOCATION``, ``POS_RELAY_URL``; the
relay token comes from ``$TIENDASYNC_TOKEN``.
"""

import os
from pathlib import Path

DATA = Path(os.environ.get("POS_DIR", Path(__file__).resolve().parents[1]))

SECRET_KEY = os.environ.get("POS_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("POS_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "tiendasync.contrib.django",
    "pos",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "pos_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tiendasync.contrib.django.context_processors.sincronizacion",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA / "auth.sqlite3"}}
USE_TZ = True
TIME_ZONE = os.environ.get("POS_TIME_ZONE", "UTC")
LANGUAGE_CODE = "es"

TIENDASYNC = {
    "DB": DATA / "tienda.db",
    "TENANT": os.environ.get("POS_TENANT", "acme"),
    "REPLICA": os.environ.get("POS_REPLICA", "caja-1"),
    "LOCATION": os.environ.get("POS_LOCATION", "tienda-1"),
    "RELAY_URL": os.environ.get("POS_RELAY_URL", "ws://127.0.0.1:8765/sync"),
}
