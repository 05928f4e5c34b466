"""The tree reads as the architecture (docs/architecture.md, README's Layout): `labmanager/` is the project
package only, and every app under `apps/` is in the layers import-linter checks."""

import tomllib
from pathlib import Path

from django.apps import apps as django_apps

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = {"__init__.py", "settings.py", "settings_production.py", "urls.py", "asgi.py", "wsgi.py"}


def test_the_project_package_holds_settings_urls_and_entry_points_only():
    found = {p.name for p in (ROOT / "labmanager").iterdir() if p.name != "__pycache__"}
    assert found == PROJECT_FILES


def test_every_app_is_installed_in_a_layer_and_in_readme():
    apps_on_disk = {f"apps.{p.name}" for p in (ROOT / "apps").iterdir() if (p / "apps.py").exists()}
    installed = {config.name for config in django_apps.get_app_configs() if config.name.startswith("apps.")}
    assert apps_on_disk == installed
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layered = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    assert apps_on_disk <= layered
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    assert [app for app in sorted(apps_on_disk) if f"  {app.split('.')[1]}/ " not in layout] == []
