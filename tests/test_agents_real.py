"""Claude Code and Codex CLI, the real ones, through trioswap to a real llama-server.

`scripts/install-agent-clis` puts the pinned CLIs into $TRIOSWAP_CACHE/agents (the session
fixture runs it; it is a no-op once they are there), `scripts/install-llama-server` the server
and SmolLM2-135M. Each test runs one headless task in a fresh working directory with a fresh
HOME, so no user config, login or session history is read, and telemetry, error reports and
update checks are off. Both CLIs authenticate with trioswap's API key, as a user's would.

The model: its answer is not the point, the exchange is. llama-server caps a slot at the
model's training context (8192 for SmolLM2) unless `llama.context_length` is overridden, so it
is raised to 32768, room for the CLIs' system prompts and tool definitions (about 4.1k tokens
for Claude Code, 4.6k for Codex) and a few turns. `setParams` bounds the reply: the first line
(a stop sequence in both families' spelling), at most 256 tokens as a backstop. A length cap
alone is no bound here: both CLIs treat a reply cut by max_tokens as an error, and Claude Code
asks again to continue it. On 2 cores a task takes about a minute, nearly all of it the
server reading the prompt (about 80 tokens/s with `-t 1`).

Both llama-server routes exist (it serves /v1/messages and /v1/responses itself), so each CLI
runs twice: `native` (trioswap passes the request on) and `translate` (trioswap speaks chat
completions to the server and translates the reply).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.conftest import LaunchFn, Trioswap, kill_group, random_start_port
from tests.test_real import CACHE, LLAMA_SERVER, MODEL

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "scripts" / "install-agent-clis"
BIN = CACHE / "agents" / "node_modules" / ".bin"
API_KEY = "agents-test-key"
# One task: starting the server (1 s), reading a ~4.5k-token prompt (about a minute on 2 cores),
# a line of answer. Generous, for a loaded CI machine.
TASK_TIMEOUT = 900.0
PROMPT = "Say hello."


@dataclass(frozen=True)
class Clis:
    claude: Path
    codex: Path


@pytest.fixture(scope="session")
def clis() -> Clis:
    done = subprocess.run([INSTALLER], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{INSTALLER} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    found = Clis(claude=BIN / "claude", codex=BIN / "codex")
    for path in (found.claude, found.codex):
        assert os.access(path, os.X_OK), f"{INSTALLER} ran but {path} is not there"
    return found


@pytest.fixture
def agent_config() -> str:
    if not (LLAMA_SERVER.exists() and MODEL.exists()):
        pytest.fail(
            f"llama-server or the model is missing in {CACHE}: run scripts/install-llama-server"
        )
    return textwrap.dedent(
        f"""\
        healthCheckTimeout: 120
        startPort: {random_start_port()}
        apiKeys: [{API_KEY}]
        macros:
          llama: >-
            {LLAMA_SERVER} --host 127.0.0.1 --port ${{PORT}} -m {MODEL}
            -t 1 --parallel 1 --ctx-size 32768 --override-kv llama.context_length=int:32768
            --alias ${{MODEL_ID}}
        models:
          agent-native:
            cmd: ${{llama}}
            apis: {{anthropic: native, responses: native}}
            filters:
              setParams: &bounded
                temperature: 0
                stop_sequences: ["\\n"]
                stop: ["\\n"]
                max_tokens: 256
                max_output_tokens: 256
          agent-translate:
            cmd: ${{llama}}
            apis: {{anthropic: translate, responses: translate}}
            filters:
              setParams: *bounded
        """
    )


@dataclass(frozen=True)
class Task:
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return (
            f"exit status {self.returncode}\n"
            f"stdout:\n{self.stdout[-3000:]}\n"
            f"stderr:\n{self.stderr[-3000:]}"
        )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory for the CLI, beside an empty HOME (`workdir.parent/home`)."""
    (tmp_path / "home").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    return work


async def run_task(argv: list[str | Path], env: dict[str, str], cwd: Path) -> Task:
    """Run a CLI to its end (or TASK_TIMEOUT), then kill whatever is left of its process
    group."""
    out, err = cwd.parent / "stdout", cwd.parent / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        try:
            with trio.fail_after(TASK_TIMEOUT):
                await process.wait()
        finally:
            kill_group(process.pid)
            with trio.CancelScope(shield=True):
                await process.wait()
    return Task(process.returncode, out.read_text(errors="replace"), err.read_text("utf-8"))


def base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}


async def check_route(ts: Trioswap, model: str, mode: str, path: str, family: str) -> None:
    """The requests went to `model` the way `mode` says, and none was refused."""
    async with ts.client(headers={"authorization": f"Bearer {API_KEY}"}) as client:
        response = await client.get("/running")
    response.raise_for_status()
    (entry,) = (e for e in response.json()["running"] if e["model"] == model)
    assert entry["apis"] == {"anthropic": mode, "responses": mode}
    assert entry["state"] == "ready"
    assert ts.count_output(rf"{path} -> \d{{3}}") == 0, "\n".join(ts.stdout[-20:])
    translated = ts.count_output(rf"POST {path}: model {model}, {family}->chat")
    if mode == "translate":
        assert translated >= 1, "\n".join(ts.stdout[-20:])
    else:
        # Native mode never falls back: the server's own route answered.
        assert translated == 0
        assert ts.count_output("->chat|translating") == 0


@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_claude_code_print_mode(
    launch: LaunchFn, agent_config: str, clis: Clis, workdir: Path, mode: str
) -> None:
    ts = await launch(agent_config)
    model = f"agent-{mode}"
    env = base_env(workdir.parent / "home") | {
        "ANTHROPIC_BASE_URL": ts.url,
        "ANTHROPIC_AUTH_TOKEN": API_KEY,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    # As root (CI), --dangerously-skip-permissions is refused; dontAsk denies whatever is not
    # allowed already, so nothing ever waits for a person.
    argv = [clis.claude, "-p", PROMPT, "--model", model, "--output-format", "json"]
    argv += ["--max-turns", "1", "--permission-mode", "dontAsk", "--no-session-persistence"]
    task = await run_task(argv, env, workdir)
    assert task.returncode == 0, task.explain()
    result = json.loads(task.stdout)
    assert result["type"] == "result" and result["is_error"] is False, task.explain()
    assert result["result"].strip(), task.explain()
    assert result["modelUsage"].keys() == {model}
    await check_route(ts, model, mode, "/v1/messages", "anthropic")


# Everything to trioswap's Responses route; no update check, analytics, feedback or OpenTelemetry.
CODEX_CONFIG = textwrap.dedent(
    """\
    model = "{model}"
    model_provider = "trioswap"
    approval_policy = "never"
    sandbox_mode = "read-only"
    check_for_update_on_startup = false

    [model_providers.trioswap]
    name = "trioswap"
    base_url = "{url}/v1"
    wire_api = "responses"
    env_key = "TRIOSWAP_API_KEY"

    [features]
    {features}

    [analytics]
    enabled = false

    [feedback]
    enabled = false

    [otel]
    exporter = "none"
    """
)


async def run_codex(
    ts: Trioswap, clis: Clis, workdir: Path, model: str, features: str = ""
) -> Task:
    codex_home = workdir.parent / "home" / ".codex"
    codex_home.mkdir()
    config = CODEX_CONFIG.format(model=model, url=ts.url, features=features)
    (codex_home / "config.toml").write_text(config)
    env = base_env(workdir.parent / "home") | {
        "CODEX_HOME": str(codex_home),
        "TRIOSWAP_API_KEY": API_KEY,
    }
    # --strict-config: a misspelt key above (telemetry left on) fails instead of being ignored.
    argv = [clis.codex, "exec", "--strict-config", "--skip-git-repo-check", "--ephemeral"]
    argv += ["--color", "never", "-o", workdir.parent / "last-message", PROMPT]
    return await run_task(argv, env, workdir)


# Codex 0.171 offers its sub-agent tools as one Responses `namespace` tool, which trioswap's
# translator refuses (400, "tool type 'namespace' cannot be translated to chat completions");
# llama-server's own /v1/responses skips it with a warning.
NAMESPACE_REFUSED = pytest.mark.xfail(
    strict=True, reason="responses_chat refuses Codex's `namespace` tool (multi_agent_v1)"
)


@pytest.mark.parametrize("mode", ["native", pytest.param("translate", marks=NAMESPACE_REFUSED)])
async def test_codex_exec(
    launch: LaunchFn, agent_config: str, clis: Clis, workdir: Path, mode: str
) -> None:
    ts = await launch(agent_config)
    model = f"agent-{mode}"
    task = await run_codex(ts, clis, workdir, model)
    assert task.returncode == 0, task.explain()
    assert (workdir.parent / "last-message").read_text().strip(), task.explain()
    await check_route(ts, model, mode, "/v1/responses", "responses")


async def test_codex_exec_translated_without_sub_agent_tools(
    launch: LaunchFn, agent_config: str, clis: Clis, workdir: Path
) -> None:
    # Until the translator takes `namespace` tools: without the multi_agent feature, Codex
    # sends function tools only, and the translated path works end to end.
    ts = await launch(agent_config)
    model = "agent-translate"
    task = await run_codex(ts, clis, workdir, model, features="multi_agent = false")
    assert task.returncode == 0, task.explain()
    assert (workdir.parent / "last-message").read_text().strip(), task.explain()
    await check_route(ts, model, "translate", "/v1/responses", "responses")
