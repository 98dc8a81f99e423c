"""Settings of the example project. taskq reads the TASKQ_ ones (proj/taskq_app.py)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-a-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = ["orders"]
# A JSON API without sessions or cookies: no session, auth or CSRF middleware.
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "proj.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# taskq: the embedded SQLite broker and store; the environment variable of the same name
# (TASKQ_BROKER_URL=redis://...) points both the site and the worker elsewhere.
TASKQ_BROKER_URL = "sqlite:///taskq.db"
TASKQ_TASK_ACKS_LATE = True
