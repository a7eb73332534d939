"""The zipapp's `__main__.py` (scripts/build-zipapp puts this file there in place of shiv's).

A warm start, where shiv has already extracted the archive's site-packages, needs only that
directory on sys.path and the entry point called. shiv's own bootstrap does it by importing about
twenty modules (zipfile, shutil, subprocess, compileall, hashlib...) and reading the archive's
2,900-entry directory a second time: about 50 ms on this project's 2-core machine. This launcher
reads shiv's environment.json through the loader that already holds the directory and does the
rest with `os` and `site`. Whenever anything is not the plain warm case (the first run, a SHIV_*
override other than SHIV_ROOT, an option this launcher does not implement), shiv's bootstrap runs
as it would have.

Nothing here may import trioswap or a third-party module: sys.path does not reach them yet.
"""

from __future__ import annotations

import json
import os
import site
import sys
from collections.abc import Mapping
from typing import Any

# shiv's environment.json options this launcher handles as shiv does when they have these values.
PLAIN_OPTIONS = {
    "always_write_cache": False,
    "no_modify": False,
    "preamble": None,
    "script": None,
    "extend_pythonpath": False,
    "prepend_pythonpath": None,
}
SHIV_ROOT = "SHIV_ROOT"


def warm_site_packages(
    shiv_env: Mapping[str, Any], environ: Mapping[str, str], archive: str
) -> str | None:
    """shiv's extracted site-packages for `archive`, when this launcher may use it as it is."""
    if any(name.startswith("SHIV_") and name != SHIV_ROOT for name in environ):
        return None
    if any(shiv_env.get(key, plain) != plain for key, plain in PLAIN_OPTIONS.items()):
        return None
    if not shiv_env.get("entry_point") or not shiv_env.get("build_id"):
        return None
    # shiv's cache_path: the root from SHIV_ROOT or the build, "$NAME" read from the environment.
    root = environ.get(SHIV_ROOT, shiv_env.get("root")) or "~/.shiv"
    if root.startswith("$"):
        root = environ.get(root[1:], root[1:])
    name = os.path.basename(os.path.realpath(archive))
    directory = os.path.join(os.path.expanduser(root), f"{name}_{shiv_env['build_id']}")
    site_packages = os.path.join(directory, "site-packages")
    return site_packages if os.path.isdir(site_packages) else None


def add_site_packages(site_packages: str) -> None:
    """As shiv does: add the directory the way `site` does (.pth files included), placed before
    any site-packages already on sys.path."""
    length = len(sys.path)
    first_site = next(
        (
            index
            for index, part in enumerate(sys.path)
            if os.path.basename(part.rstrip(os.sep)) in ("site-packages", "dist-packages")
        ),
        length,
    )
    site.addsitedir(site_packages)
    sys.path[:] = sys.path[:first_site] + sys.path[length:] + sys.path[first_site:length]


def run_entry_point(entry_point: str) -> None:
    module_name, _, attribute = entry_point.partition(":")
    function: Any = __import__(module_name, fromlist=["_"])
    for part in attribute.split("."):
        function = getattr(function, part)
    sys.exit(function())


def launch() -> None:
    archive = sys.argv[0]
    shiv_env = json.loads(__loader__.get_data("environment.json"))  # type: ignore[name-defined]
    site_packages = warm_site_packages(shiv_env, os.environ, archive)
    if site_packages is None:
        import _bootstrap  # shiv's bootstrap, in the archive beside this file

        _bootstrap.bootstrap()
        return
    # The archive itself holds only shiv's bootstrap now; left first on sys.path, its importer
    # (pure Python) would be asked first for every module trioswap imports.
    archive_entry = __loader__.archive  # type: ignore[name-defined]
    if archive_entry in sys.path:
        sys.path.remove(archive_entry)
    add_site_packages(site_packages)
    run_entry_point(shiv_env["entry_point"])


if __name__ == "__main__":
    launch()
