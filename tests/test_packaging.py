"""
The package installs the way twistd needs: the dropin lands in
``twisted/plugins`` (without an ``__init__.py`` that would shadow Twisted's
own), ``twistd`` lists ``twistedmail``, and its options are there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from twistedmail.store.makers import store_makers

ROOT = Path(__file__).resolve().parent.parent


def twistd() -> str:
    """The twistd script installed next to this Python (the venv's, not another)."""
    return os.path.join(sysconfig.get_path("scripts"), "twistd")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_twistd_lists_twistedmail(tmp_path):
    # From an unrelated directory: the plugin must come from the install,
    # not from a checkout that happens to be the current directory.
    result = run([twistd(), "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "twistedmail" in result.stdout


def test_twistd_twistedmail_help_lists_the_options(tmp_path):
    result = run([twistd(), "twistedmail", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for option in (
        "--config=",
        "--data-dir=",
        "--storage=",
        "--hostname=",
        "--smtp=",
        "--submission=",
        "--submissions=",
        "--imap=",
        "--imaps=",
        "--http=",
        "--https=",
        "--set=",
    ):
        assert option in result.stdout
    assert "tcp:2525:interface=127.0.0.1" in result.stdout  # defaults are shown
    assert not list(tmp_path.iterdir()), "--help creates nothing"


def test_both_store_backends_are_plugins():
    makers = store_makers()
    assert {"memory", "maildir"} <= set(makers)
    for name, maker in makers.items():
        assert maker.name == name
        assert maker.description


def test_the_built_package_has_the_dropin_in_twisted_plugins(tmp_path):
    """What ``pip install .`` copies, built by setuptools from setup.cfg."""
    pytest.importorskip("setuptools", reason="building needs setuptools in this environment")
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("twisted", "twistedmail"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    build = tmp_path / "build"
    result = run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "--quiet",
            "build_py",
            "--build-lib",
            str(build),
        ],
        source,
    )
    assert result.returncode == 0, result.stderr
    assert (build / "twisted" / "plugins" / "twistedmail_plugin.py").is_file()
    # An __init__.py here would replace Twisted's own package on import.
    assert not (build / "twisted" / "__init__.py").exists()
    assert not (build / "twisted" / "plugins" / "__init__.py").exists()
    assert (build / "twistedmail" / "py.typed").is_file()
    assert (build / "twistedmail" / "config.py").is_file()
    assert not list(build.rglob("__pycache__"))
