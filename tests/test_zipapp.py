"""The one-file distribution: build dist/trioswap.pyz with shiv and run the demo from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.conftest import LISTEN_LINE

ROOT = Path(__file__).resolve().parent.parent


async def test_zipapp_builds_and_serves_the_demo(tmp_path: Path) -> None:
    pyz = tmp_path / "trioswap.pyz"
    env = {**os.environ, "PYTHON": sys.executable, "SHIV_ROOT": str(tmp_path / "shiv")}
    build = await trio.run_process(
        [str(ROOT / "scripts" / "build-zipapp"), str(pyz)],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr.decode()[-2000:]
    assert pyz.stat().st_size > 1_000_000

    version = await trio.run_process(
        [sys.executable, str(pyz), "--version"], env=env, capture_stdout=True, cwd=tmp_path
    )
    assert version.stdout.decode().startswith("trioswap ")
    # That first run extracted the archive through shiv's bootstrap; from now on the launcher
    # starts from the extracted copy without it.
    warm = await trio.run_process(
        [sys.executable, "-X", "importtime", str(pyz), "--version"],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        cwd=tmp_path,
    )
    assert warm.stdout.decode().startswith("trioswap ")
    assert b"_bootstrap" not in warm.stderr and b"trioswap.cli" in warm.stderr

    # The demo's model servers are started through the zipapp itself (${env.TRIOSWAP_SELF}).
    process = await trio.lowlevel.open_process(
        [sys.executable, str(pyz), "--listen", "127.0.0.1:0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(60):
            while (match := LISTEN_LINE.search(output.decode())) is None:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the zipapp exited before listening"
                output += chunk
        async with httpx.AsyncClient(base_url=match.group(1), timeout=30) as client:
            response = await client.post(
                "/v1/chat/completions", json={"model": "beta", "messages": []}
            )
            # The UI comes from the zipapp's own copy of static_ui/.
            page = await client.get("/ui/")
        assert response.status_code == 200
        assert response.json()["responder"]["model_id"] == "beta"
        assert page.status_code == 200 and "<html" in page.text.lower()
        process.terminate()
        with trio.fail_after(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
