"""pgshroud installs under one namespace, and each package has one name.

The repository keeps proxy/, rewriter/ and policies/ at its top level; a
wheel must hold them as pgshroud.proxy, pgshroud.rewriter and
pgshroud.policies only (a top-level `proxy` collides with other
distributions), with their package data, and an installed copy must work
without the repository. From the repository root, the folders must not be
importable under their bare names, or a second copy of a module could hold
a second copy of its state.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# What a source distribution holds; built from a copy, so that the build leaves
# nothing in the repository and parallel test workers do not share a build/.
SOURCES = ("pyproject.toml", "README.md", "pgshroud", "proxy", "rewriter", "policies")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("pgshroud-*.whl")
    return path


def test_the_wheel_holds_one_top_level_package_with_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"pgshroud", f"{wheel.name.split('-py')[0]}.dist-info"}
    for expected in ("pgshroud/proxy/session/conversation.py", "pgshroud/rewriter/access.py",
                     "pgshroud/policies/accounting.py", "pgshroud/policies/examples/healthcare.yaml",
                     "pgshroud/proxy/commands/demo_data/schema.sql", "pgshroud/sqlstate.py"):
        assert expected in names
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py')[0]}.dist-info/entry_points.txt").decode()
    assert "pgshroud = pgshroud.proxy.commands.cli:main" in entry_points


def test_an_installed_copy_works_without_the_repository(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import importlib.resources, pgshroud.proxy.commands.cli, pgshroud.policies.loader as loader\n"
        "policy = importlib.resources.files('pgshroud.policies') / 'examples' / 'healthcare.yaml'\n"
        "with importlib.resources.as_file(policy) as path:\n"
        "    loader.load_policy(path)\n"
        "print(pgshroud.proxy.__file__)\n"
    )
    # -S: no site hooks, so the development install of this repository cannot answer for pgshroud; the
    # dependencies are found in site-packages, after the installed copy.
    env = {"PYTHONPATH": os.pathsep.join([str(target), *site.getsitepackages()]), "PATH": "/usr/bin:/bin"}
    ran = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=env, check=False)
    assert ran.returncode == 0, ran.stderr
    assert Path(ran.stdout.strip()).is_relative_to(target)
    helped = subprocess.run([sys.executable, "-S", "-m", "pgshroud", "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env=env, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout


@pytest.mark.parametrize("bare", ["proxy", "rewriter", "policies"])
def test_a_package_is_not_importable_under_its_bare_name(bare: str) -> None:
    ran = subprocess.run([sys.executable, "-c", f"import {bare}"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False)
    assert ran.returncode != 0
    assert f"imported as pgshroud.{bare}" in ran.stderr


def test_the_repository_root_runs_the_same_modules() -> None:
    ran = subprocess.run([sys.executable, "-c", ("import pgshroud.proxy, pgshroud.rewriter; "
                          "print(pgshroud.proxy.__file__); print(pgshroud.rewriter.__file__)")],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    proxy_init, rewriter_init = (Path(line).resolve() for line in ran.stdout.split())
    assert proxy_init == REPO / "proxy" / "__init__.py"
    assert rewriter_init == REPO / "rewriter" / "__init__.py"
