"""training/, advisor/, history/, session/ and console/ never import Textual, so they run without a screen.

Every module under those packages is imported in a fresh interpreter, and Textual must
not be among the modules loaded afterwards.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import copilot

SCREENLESS_PACKAGES = ("copilot.training", "copilot.advisor", "copilot.history", "copilot.session", "copilot.console")

PROBE = """
import importlib, json, pkgutil, sys
failed = {}
for package_name in PACKAGES:
    try:
        package = importlib.import_module(package_name)
    except ModuleNotFoundError:
        continue  # a package not written yet has nothing to import
    for module in pkgutil.walk_packages(package.__path__, package_name + "."):
        try:
            importlib.import_module(module.name)
        except Exception as error:
            failed[module.name] = f"{type(error).__name__}: {error}"
imported = sorted(name for name in sys.modules if name == "textual" or name.startswith("textual."))
print(json.dumps({"textual": imported, "failed": failed}))
"""


def test_screenless_packages_never_import_textual() -> None:
    code = f"PACKAGES = {SCREENLESS_PACKAGES!r}\n{PROBE}"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["textual"] == []


def test_the_probe_would_notice_textual() -> None:
    """The same probe over the app's own package does see Textual, so an empty answer above means something."""
    code = f"PACKAGES = ('copilot.tui',)\n{PROBE}"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=True)
    assert "textual" in json.loads(completed.stdout.strip().splitlines()[-1])["textual"]
    assert {module.name for module in pkgutil.iter_modules(copilot.__path__)} >= {"training", "advisor", "history", "tui"}
