"""Where trioswap's data folders are: `pipelines/`, `static_ui/` and `config/`.

They live at the top of the repository (the design card's layout). A wheel or the zipapp ships
them inside the package as `trioswap/_data/<name>` (hatchling `force-include`); an editable
checkout has no such copy (editable installs don't see force-included files), so there they are
read from the repository root next to `src/`.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

FOLDERS = ("pipelines", "static_ui", "config")
_CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


def data_folder(name: str) -> Traversable:
    """The folder `name` (one of `FOLDERS`) as shipped, or from the checkout."""
    if name not in FOLDERS:
        raise ValueError(f"no data folder {name!r}")
    packaged = resources.files("trioswap") / "_data" / name
    if packaged.is_dir():
        return packaged
    checkout = _CHECKOUT_ROOT / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"trioswap's {name}/ folder is missing: neither {packaged} nor {checkout} exists "
        "(a broken install? reinstall trioswap)"
    )
