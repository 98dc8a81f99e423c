"""The project's taskq app, as Celery's proj/celery.py: its settings are the TASKQ_ names of
Django's settings, its tasks the `tasks` modules of the installed apps.

Worker (from this folder):  taskq worker -A proj.taskq_app:app
"""

import os

import django
from django.conf import settings

from taskq import TaskQ

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
django.setup()  # a worker imports this module first; in the site it is set up already

app = TaskQ("proj")
app.config_from_object("django.conf:settings", namespace="TASKQ")
app.autodiscover_tasks(lambda: settings.INSTALLED_APPS)  # imported when a worker starts
