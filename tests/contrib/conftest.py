"""Django configured once for these tests: auth on a temporary SQLite, the app installed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import django
import pytest
from django.conf import settings

from tests.cli.conftest import relay as relay  # the real relay process fixture
from tests.cli.relay_process import RunningRelay, tiendasync
from tiendasync.contrib.django import conf

_AUTH_DB = Path(tempfile.mkdtemp(prefix="tiendasync-django-")) / "auth.sqlite3"

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-only",
        ALLOWED_HOSTS=["testserver", "127.0.0.1"],
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.messages",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "tiendasync.contrib.django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
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
        ],
        ROOT_URLCONF="tests.contrib.urls",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(_AUTH_DB)}},
        TIENDASYNC={"DB": str(_AUTH_DB.parent / "unused.db")},
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh ``TIENDASYNC`` settings dict on a new store file; the replica closed after."""
    monkeypatch.delenv("TIENDASYNC_TOKEN", raising=False)
    options = {
        "DB": str(tmp_path / "tienda-1.db"),
        "TENANT": "acme",
        "REPLICA": "tienda-1",
        "LOCATION": "tienda-1",
    }
    conf.close_replica()
    monkeypatch.setattr(settings, "TIENDASYNC", options)
    yield options
    conf.close_replica()


@pytest.fixture
def relay_token(relay: RunningRelay) -> str:
    """A token of the running relay for store ``tienda-1`` of tenant ``acme``."""
    args = ["relay", "token", "add", "--db", relay.db, "--tenant", "acme"]
    return tiendasync(*args, "--replica", "tienda-1", "--location", "tienda-1").stdout.strip()
