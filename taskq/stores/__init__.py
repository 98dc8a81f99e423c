"""Result stores (Celery's "result backend"). Pick one by URL with `create_store`."""

from taskq.stores.base import ResultStore, StoreOptions, TaskMeta, create_store

__all__ = ["ResultStore", "StoreOptions", "TaskMeta", "create_store"]
