"""Replaces the `__main__.py` of a shiv zipapp with trioswap's launcher (src/trioswap/
zipapp_launcher.py, which says why), keeping the shebang, every other entry and its metadata.

    python scripts/put_zipapp_launcher.py dist/trioswap.pyz
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent.parent / "src" / "trioswap" / "zipapp_launcher.py"
MAIN = "__main__.py"


def put_launcher(archive: Path) -> None:
    launcher = LAUNCHER.read_bytes()
    with zipfile.ZipFile(archive) as source:
        # The shebang shiv wrote before the zip's first entry.
        with archive.open("rb") as file:
            prefix = file.read(min(info.header_offset for info in source.infolist()))
        rebuilt = archive.with_name(archive.name + ".tmp")
        with rebuilt.open("wb") as file:
            file.write(prefix)
            with zipfile.ZipFile(file, "w") as target:
                for info in source.infolist():
                    content = launcher if info.filename == MAIN else source.read(info)
                    target.writestr(info, content)
    os.chmod(rebuilt, archive.stat().st_mode)
    rebuilt.replace(archive)


if __name__ == "__main__":
    put_launcher(Path(sys.argv[1]))
