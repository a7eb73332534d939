"""Claude Code and Codex CLI, the real ones, through trioswap.

`scripts/install-agent-clis` puts the pinned CLIs into $TRIOSWAP_CACHE/agents (the session
fixture runs it; it does nothing once they are there), `scripts/install-llama-server` the server
and SmolLM2-135M. Each test runs one headless task in a fresh working directory with a fresh
HOME, so no user config, login or session history is read; telemetry, error reports and update
checks are off. Both CLIs authenticate with trioswap's API key, as a user's would.

Against llama-server with SmolLM2, each CLI gets a one-line answer. llama-server serves
/v1/messages and /v1/responses itself, so each runs twice: `native` (trioswap passes the
request on) and `translate` (trioswap speaks chat completions to the server and translates the
reply). The answer's quality is not the point, the exchange is. llama-server caps a slot at the
model's training context (8192 for SmolLM2) unless `llama.context_length` is overridden, so it
is raised to 32768: room for the CLIs' system prompts and tool definitions (about 4.1k tokens for
Claude Code, 4.6k for Codex) and a few turns. `setParams` bounds the reply to its first sentence
or line (stop sequences, in both families' spelling), with 256 tokens as a backstop. A length
cap alone is no bound here: both CLIs treat a reply cut by max_tokens as an error, and Claude
Code asks again to continue it. On 2 cores a task takes about 40 s, nearly all of it
llama-server reading the prompt (`-t 2 -tb 2`: both cores, since trioswap and the CLI only wait
meanwhile).

A 135M model never calls a tool, so tool calls are scripted: trioswap's responder calls the
tool its prompt names, and answers with the tool's result once it comes back. The CLI runs the
tool (Claude Code's Read, Codex's exec_command on a file in its working directory), and the
file's text must come back in the final answer, through trioswap both ways, in both modes.
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

from tests.conftest import RESPONDER, LaunchFn, Trioswap, kill_group, random_start_port
from tests.test_real import CACHE, LLAMA_SERVER, MODEL

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "scripts" / "install-agent-clis"
BIN = CACHE / "agents" / "node_modules" / ".bin"
API_KEY = "agents-test-key"
# One task against llama-server: its start (1 s), reading a ~4.5k-token prompt (about 40 s
# on 2 cores), a line of answer. Generous, for a loaded CI machine.
TASK_TIMEOUT = 900.0
PROMPT = "Say hello."
NOTE = "the note says 7c1f"
MODES = ["native", "translate"]


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
def smollm2_agent_config() -> str:
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
            -t 2 -tb 2 --parallel 1 --ctx-size 32768 --override-kv llama.context_length=int:32768
            --alias ${{MODEL_ID}}
        models:
          smollm2-native:
            cmd: ${{llama}}
            apis: {{anthropic: native, responses: native}}
            filters:
              setParams: &bounded
                temperature: 0
                stop_sequences: &stops ["\\n", ".", "!", "?"]
                stop: *stops
                max_tokens: 256
                max_output_tokens: 256
          smollm2-translate:
            cmd: ${{llama}}
            apis: {{anthropic: translate, responses: translate}}
            filters:
              setParams: *bounded
        """
    )


@pytest.fixture
def scripted_config() -> str:
    """The responder, serving Anthropic and Responses itself (native) or chat only (translate)."""
    return f"""
healthCheckTimeout: 20
startPort: {random_start_port()}
apiKeys: [{API_KEY}]
models:
  scripted-native:
    cmd: {RESPONDER} --port ${{PORT}} --model-id scripted-native --apis chat,anthropic,responses
    apis: {{anthropic: native, responses: native}}
  scripted-translate:
    cmd: {RESPONDER} --port ${{PORT}} --model-id scripted-translate --apis chat
    apis: {{anthropic: translate, responses: translate}}
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory for the CLI, beside an empty HOME (`workdir.parent/home`)."""
    (tmp_path / "home").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    return work


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
    return Task(process.returncode, out.read_text("utf-8"), err.read_text("utf-8"))


def base_env(workdir: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(workdir.parent / "home"), "LANG": "C.UTF-8"}


async def run_claude(ts: Trioswap, claude: Path, workdir: Path, model: str, prompt: str) -> str:
    """`claude -p`; its answer, once it exited 0 with a result that is no error."""
    env = base_env(workdir) | {
        "ANTHROPIC_BASE_URL": ts.url,
        "ANTHROPIC_AUTH_TOKEN": API_KEY,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    # As root (CI), --dangerously-skip-permissions is refused; dontAsk denies whatever is not
    # allowed already (reading files in the working directory is), so nothing waits for a
    # person. Two turns: a tool call and the answer after it.
    argv = [claude, "-p", prompt, "--model", model, "--output-format", "json"]
    argv += ["--max-turns", "2", "--permission-mode", "dontAsk", "--no-session-persistence"]
    task = await run_task(argv, env, workdir)
    assert task.returncode == 0, task.explain()
    result = json.loads(task.stdout)
    assert result["type"] == "result" and result["is_error"] is False, task.explain()
    assert result["permission_denials"] == [], task.explain()
    assert result["modelUsage"].keys() == {model}, "only the model asked for was used"
    return str(result["result"])


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

    [analytics]
    enabled = false

    [feedback]
    enabled = false

    [otel]
    exporter = "none"
    """
)


async def run_codex(ts: Trioswap, codex: Path, workdir: Path, model: str, prompt: str) -> str:
    """`codex exec`; its last message, once it exited 0."""
    codex_home = workdir.parent / "home" / ".codex"
    codex_home.mkdir()
    config = CODEX_CONFIG.format(model=model, url=ts.url)
    (codex_home / "config.toml").write_text(config)
    env = base_env(workdir) | {"CODEX_HOME": str(codex_home), "TRIOSWAP_API_KEY": API_KEY}
    last = workdir.parent / "last-message"
    # --strict-config: a misspelt key above (telemetry left on) fails instead of being ignored.
    argv = [codex, "exec", "--strict-config", "--skip-git-repo-check", "--ephemeral"]
    argv += ["--color", "never", "--output-last-message", last, prompt]
    task = await run_task(argv, env, workdir)
    assert task.returncode == 0, task.explain()
    return last.read_text("utf-8")


async def check_route(ts: Trioswap, model: str, mode: str, path: str, requests: int) -> None:
    """`requests` requests went to `model` the way `mode` says, and none was refused."""
    async with ts.client(headers={"authorization": f"Bearer {API_KEY}"}) as client:
        response = await client.get("/running")
    response.raise_for_status()
    (entry,) = (e for e in response.json()["running"] if e["model"] == model)
    assert entry["apis"] == {"anthropic": mode, "responses": mode}
    assert entry["state"] == "ready"
    log = "\n".join(ts.stdout[-20:])
    assert ts.count_output(rf"{path} -> \d{{3}}") == 0, log
    family = "anthropic" if path == "/v1/messages" else "responses"
    translated = ts.count_output(rf"POST {path}: model {model}, {family}->chat")
    # Native mode never falls back: the server's own route answered.
    assert translated == (requests if mode == "translate" else 0), log


@pytest.mark.parametrize("mode", MODES)
async def test_claude_code_answers(
    launch: LaunchFn, smollm2_agent_config: str, clis: Clis, workdir: Path, mode: str
) -> None:
    ts = await launch(smollm2_agent_config)
    model = f"smollm2-{mode}"
    answer = await run_claude(ts, clis.claude, workdir, model, PROMPT)
    assert answer.strip()
    await check_route(ts, model, mode, "/v1/messages", requests=1)


@pytest.mark.parametrize("mode", MODES)
async def test_codex_answers(
    launch: LaunchFn, smollm2_agent_config: str, clis: Clis, workdir: Path, mode: str
) -> None:
    ts = await launch(smollm2_agent_config)
    model = f"smollm2-{mode}"
    answer = await run_codex(ts, clis.codex, workdir, model, PROMPT)
    assert answer.strip()
    await check_route(ts, model, mode, "/v1/responses", requests=1)


@pytest.mark.parametrize("mode", MODES)
async def test_claude_code_tool_call(
    launch: LaunchFn, scripted_config: str, clis: Clis, workdir: Path, mode: str
) -> None:
    ts = await launch(scripted_config)
    model = f"scripted-{mode}"
    (workdir / "note.txt").write_text(NOTE)
    call = json.dumps({"file_path": str(workdir / "note.txt")})
    answer = await run_claude(ts, clis.claude, workdir, model, f"[[tool:Read {call}]]")
    assert answer.startswith("got tool result: ") and NOTE in answer
    await check_route(ts, model, mode, "/v1/messages", requests=2)


@pytest.mark.parametrize("mode", MODES)
async def test_codex_tool_call(
    launch: LaunchFn, scripted_config: str, clis: Clis, workdir: Path, mode: str
) -> None:
    ts = await launch(scripted_config)
    model = f"scripted-{mode}"
    (workdir / "note.txt").write_text(NOTE)
    call = json.dumps({"cmd": "cat note.txt"})
    prompt = f"[[tool:exec_command {call}]]"
    answer = await run_codex(ts, clis.codex, workdir, model, prompt)
    assert answer.startswith("got tool result: ") and NOTE in answer
    await check_route(ts, model, mode, "/v1/responses", requests=2)


async def test_codex_with_its_default_tools_translated(
    launch: LaunchFn, scripted_config: str, clis: Clis, workdir: Path
) -> None:
    ts = await launch(scripted_config)
    answer = await run_codex(ts, clis.codex, workdir, "scripted-translate", PROMPT)
    assert answer.strip()
    await check_route(ts, "scripted-translate", "translate", "/v1/responses", requests=1)
