"""The data folders (`pipelines/`, `static_ui/`, `config/`) live at the top level and are found
in an editable checkout, an installed wheel and the zipapp (the zipapp in test_zipapp.py)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
import trio

from trioswap.assets import FOLDERS, data_folder
from trioswap.config import loads

ROOT = Path(__file__).resolve().parent.parent


def test_editable_checkout_reads_the_top_level_folders() -> None:
    for name in FOLDERS:
        assert Path(str(data_folder(name))) == ROOT / name
    assert (data_folder("config") / "demo.yaml").is_file()
    assert (data_folder("pipelines") / "openai.yaml").is_file()
    assert (data_folder("static_ui") / "templates" / "base.html").is_file()


def test_unknown_folder_is_refused() -> None:
    with pytest.raises(ValueError):
        data_folder("secrets")


async def test_an_installed_wheel_ships_and_finds_them(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = await trio.run_process(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr.decode()[-2000:]
    (wheel,) = wheels.glob("trioswap-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("config/demo.yaml", "config/example.yaml", "pipelines/openai.yaml"):
        assert f"trioswap/_data/{name}" in names
    assert "trioswap/_data/static_ui/templates/base.html" in names

    # Installed somewhere else, the package finds its own copies, not this checkout's.
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    probe = (
        "from trioswap.assets import FOLDERS, data_folder\n"
        "for name in FOLDERS: print(data_folder(name))\n"
    )
    result = await trio.run_process(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n{probe}"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode()
    found = result.stdout.decode().split()
    assert found == [str(target / "trioswap" / "_data" / name) for name in FOLDERS]


def test_the_example_config_is_valid() -> None:
    text = (data_folder("config") / "example.yaml").read_text(encoding="utf-8")
    config = loads(text, "example.yaml", {"TRIOSWAP_API_KEY": "k", "HOME": "/home/me"})
    assert config.cors_origins and config.allowed_hosts
    assert config.models["qwen-7b"].timeouts.response_header == 600
