"""The modules that define an app's tasks, imported when a worker or beat starts:
Celery's `imports` and `include` settings, and the packages given to
`app.autodiscover_tasks()` (each one's `tasks` module, if it has one)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from taskq.config import Settings
from taskq.errors import ConfigurationError

Packages = Iterable[str] | Callable[[], Iterable[str]]


@dataclass(frozen=True, slots=True)
class Discovery:
    """Packages to look into: `<package>.<related_name>` for each."""

    packages: Packages
    related_name: str = "tasks"

    def modules(self) -> list[str]:
        packages = self.packages() if callable(self.packages) else self.packages
        return [module for package in packages if (module := self._module_of(package))]

    def _module_of(self, package: str) -> str | None:
        """The package's tasks module, or None when the package has none."""
        name = f"{package}.{self.related_name}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                return None
            raise ConfigurationError(f"autodiscover_tasks: cannot import {name!r}: {exc}") from exc
        return name


def import_task_modules(conf: Settings, discoveries: Iterable[Discovery]) -> None:
    """Import `imports`, then `include`, then each discovery's modules."""
    for setting in ("imports", "include"):
        for module in getattr(conf, setting):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigurationError(f"{setting}: cannot import {module!r}: {exc}") from exc
    for discovery in discoveries:
        discovery.modules()
