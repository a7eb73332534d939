"""The zipapp's launcher (src/trioswap/zipapp_launcher.py): where it finds shiv's extracted
site-packages, checked against shiv's own `cache_path`; when it hands over to shiv's bootstrap;
and both paths run for real on a small archive that shiv's builder makes (seconds, not the full
build of test_zipapp.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from shiv import bootstrap as shiv_bootstrap
from shiv import builder
from shiv.bootstrap.environment import Environment

from trioswap.zipapp_launcher import PLAIN_OPTIONS, add_site_packages, warm_site_packages

ROOT = Path(__file__).resolve().parent.parent
BUILD_ID = "0123abcd"
ENTRY = "probe:main"
# What the archive's entry point reports: whether shiv's bootstrap ran, and its sys.path.
PROBE = """
import json, sys

def main():
    print(json.dumps({"bootstrap": "_bootstrap" in sys.modules, "path": sys.path}))
    return 3
"""


def shiv_env(**options: object) -> dict[str, object]:
    return {"build_id": BUILD_ID, "entry_point": ENTRY, **PLAIN_OPTIONS, **options}


def extracted(root: Path, archive: Path) -> Path:
    site_packages = root / f"{archive.name}_{BUILD_ID}" / "site-packages"
    site_packages.mkdir(parents=True)
    return site_packages


@pytest.mark.parametrize("root", [None, "{tmp}/shiv", "~/cache", "$APP_CACHE", "$UNSET_VAR"])
def test_the_directory_is_the_one_shiv_extracts_to(
    root: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = root and root.format(tmp=tmp_path)
    monkeypatch.chdir(tmp_path)  # "$UNSET_VAR" means the relative directory UNSET_VAR
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("UNSET_VAR", raising=False)
    archive = tmp_path / "app.pyz"
    expected = shiv_bootstrap.cache_path(SimpleNamespace(filename=str(archive)), root, BUILD_ID)
    (expected / "site-packages").mkdir(parents=True)
    environ = {"APP_CACHE": str(tmp_path / "cache")}
    found = warm_site_packages(shiv_env(root=root), environ, str(archive))
    assert found == str(expected / "site-packages")


def test_shiv_root_from_the_environment_wins_over_the_builds(tmp_path: Path) -> None:
    archive = tmp_path / "app.pyz"
    site_packages = extracted(tmp_path / "runtime", archive)
    environ = {"SHIV_ROOT": str(tmp_path / "runtime")}
    found = warm_site_packages(shiv_env(root=str(tmp_path / "built")), environ, str(archive))
    assert found == str(site_packages)


def test_a_symlinked_archive_uses_its_targets_name(tmp_path: Path) -> None:
    archive = tmp_path / "app.pyz"
    archive.touch()
    (tmp_path / "link.pyz").symlink_to(archive)
    site_packages = extracted(tmp_path / "root", archive)
    environ = {"SHIV_ROOT": str(tmp_path / "root")}
    assert warm_site_packages(shiv_env(), environ, str(tmp_path / "link.pyz")) == str(site_packages)


def test_nothing_extracted_yet_hands_over_to_shiv(tmp_path: Path) -> None:
    environ = {"SHIV_ROOT": str(tmp_path)}
    assert warm_site_packages(shiv_env(), environ, str(tmp_path / "app.pyz")) is None


@pytest.mark.parametrize(
    "variable",
    sorted(
        value
        for name, value in vars(Environment).items()
        if name.isupper() and isinstance(value, str) and value != "SHIV_ROOT"
    ),
)
def test_every_shiv_override_but_the_root_hands_over_to_shiv(variable: str, tmp_path: Path) -> None:
    archive = tmp_path / "app.pyz"
    extracted(tmp_path, archive)
    environ = {"SHIV_ROOT": str(tmp_path), variable: "0"}
    assert warm_site_packages(shiv_env(), environ, str(archive)) is None


@pytest.mark.parametrize(
    "options",
    [
        {"always_write_cache": True},
        {"no_modify": True},
        {"preamble": "pre.py"},
        {"script": "tool"},
        {"extend_pythonpath": True},
        {"prepend_pythonpath": "/x"},
        {"entry_point": None},
        {"build_id": None},
    ],
)
def test_a_build_option_the_launcher_does_not_implement_hands_over_to_shiv(
    options: dict[str, object], tmp_path: Path
) -> None:
    archive = tmp_path / "app.pyz"
    extracted(tmp_path, archive)
    environ = {"SHIV_ROOT": str(tmp_path)}
    assert warm_site_packages(shiv_env(), environ, str(archive)) is not None
    assert warm_site_packages(shiv_env(**options), environ, str(archive)) is None


def test_site_packages_goes_before_the_interpreters_with_its_pth_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    (tmp_path / "extra").mkdir()
    (site_packages / "extra.pth").write_text(f"{tmp_path / 'extra'}\n")
    monkeypatch.setattr(sys, "path", ["/app.pyz", "/lib/python3.11", "/venv/site-packages", "/x"])
    add_site_packages(str(site_packages))
    assert sys.path == [
        "/app.pyz",
        "/lib/python3.11",
        str(site_packages),
        str(tmp_path / "extra"),
        "/venv/site-packages",
        "/x",
    ]


def build_archive(tmp_path: Path) -> Path:
    """A shiv zipapp of one module, its __main__.py replaced as scripts/build-zipapp does."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "probe.py").write_text(PROBE)
    archive = tmp_path / "probe.pyz"
    env = Environment(
        built_at="1980-01-01 00:00:00", shiv_version="1", entry_point=ENTRY, compile_pyc=False
    )
    builder.create_archive([source], archive, sys.executable, "_bootstrap:bootstrap", env)
    put = [sys.executable, str(ROOT / "scripts" / "put_zipapp_launcher.py"), str(archive)]
    subprocess.run(put, check=True)
    return archive


def run_archive(archive: Path, **environ: str) -> dict[str, object]:
    env = {**os.environ, "SHIV_ROOT": str(archive.parent / "cache"), **environ}
    done = subprocess.run(
        [sys.executable, str(archive)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 3, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_archive_keeps_its_entries_and_shebang_with_the_launcher_as_main(
    tmp_path: Path,
) -> None:
    archive = build_archive(tmp_path)
    assert archive.read_bytes().startswith(f"#!{sys.executable}\n".encode())
    assert os.access(archive, os.X_OK)
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        main = zipped.read("__main__.py")
    assert main == (ROOT / "src" / "trioswap" / "zipapp_launcher.py").read_bytes()
    assert names.count("__main__.py") == 1
    assert {"environment.json", "_bootstrap/__init__.py", "site-packages/probe.py"} <= set(names)


def test_first_start_extracts_through_shiv_then_warm_starts_skip_it(tmp_path: Path) -> None:
    archive = build_archive(tmp_path)
    cold = run_archive(archive)
    warm = run_archive(archive)
    overridden = run_archive(archive, SHIV_FORCE_EXTRACT="0")
    site_packages = next((tmp_path / "cache").glob("probe.pyz_*/site-packages"))
    assert cold["bootstrap"] is True and overridden["bootstrap"] is True
    assert warm["bootstrap"] is False
    path = warm["path"]
    assert isinstance(path, list)
    assert str(site_packages) in path and str(archive) not in path
