"""`optimize`: fit a chat completions, Anthropic Messages or Responses request into its model's
context window (after `filters`, before `translate` and `swap`), as the model's policy says.

Per request it finds the policy (runtime override, else config), the window (`window.py`), the
budget (window - the reply's reserve - a margin) and the model's token counter (`tokens.py`),
then runs the pure optimizer (`optimizer/core.py`). Under `llm_assisted` a new trim's dropped
turns are summarized by the model itself, only when it is already running (never swapped in for
that) and within `optimizer.summaryTimeout`. The response says what happened in
`X-Trioswap-Prompt-Optimized`, the latest outcome per model is kept for
`/api/model/<model>/prompt-optimization/latest`, and if the server still refuses the prompt for
its size (llama-server's `exceed_context_size_error`), `stream` asks this stage once for a
smaller one (`Exchange.shrink`).

A model a running Ollama serves is optimized the same way, with the context Ollama serves it
with (`discovery.ollama`) and the tokenizer its `show --verbose` metadata gives, else the
estimate; its dropped turns are summarized by Ollama, which loads the model when asked.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

import trio

from trioswap.config import ModelConfig
from trioswap.discovery.ollama import PREFIX
from trioswap.errors import PromptTooLong
from trioswap.optimizer.summary import Summaries, SummaryFailed, open_completer
from trioswap.optimizer.tokens import Counter
from trioswap.optimizer.transcript import Family, texts_of
from trioswap.optimizer.window import Window, Windows, context_window, output_reserve, prompt_budget
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.stages.translate import translate
from trioswap.pipeline.upstream import upstream_timeouts
from trioswap.supervisor import ModelState

if TYPE_CHECKING:
    from trioswap.optimizer.core import Memory, Outcome, Settings

log = logging.getLogger("trioswap.optimizer")

OPTIMIZED_HEADER = b"x-trioswap-prompt-optimized"
FAMILY_OF_PATH: dict[str, Family] = {
    "/v1/chat/completions": "chat",
    "/v/chat/completions": "chat",
    "/v1/messages": "anthropic",
    "/v/messages": "anthropic",
    "/v1/responses": "responses",
    "/v/responses": "responses",
}
# The least margin, in tokens, however small the window.
MIN_MARGIN = 32
# A summary request's turns are sent in pieces that fit the prompt budget with the summary so
# far and the reply (both at most summaryMaxTokens), counted at 2 characters a token, fewer
# than any tokenizer gives for text, and never less than this.
MIN_SUMMARY_CHUNK = 1024


class Optimize:
    def __init__(self, context: StageContext) -> None:
        self._config = context.config
        self._settings = context.config.optimizer
        self._runtime = context.runtime
        self._supervisor = context.supervisor
        self._pools = context.upstream_pools
        self._counters = context.counters
        self._windows = Windows()
        self._ollama = context.ollama
        # By model id: local ones, and those of Ollama's that requests named.
        self._memories: dict[str, Memory] = {}
        self._summaries: defaultdict[str, Summaries] = defaultdict(Summaries)
        self._no_window: set[str] = set()
        # Each local model's window, by (model, runtime context size).
        self._window_of: dict[tuple[str, int | None], Window | None] = {}
        self._extensions = {
            m.id: {"timeout": upstream_timeouts(m)} for m in context.config.models.values()
        }
        if context.ollama is not None:
            self._extensions[PREFIX] = {"timeout": upstream_timeouts(context.ollama.template)}

    async def __call__(self, exchange: Exchange) -> bool:
        family = FAMILY_OF_PATH.get(exchange.path)
        body = exchange.json
        discovered = exchange.discovered
        if family is None or body is None:
            return False
        if discovered is not None:
            model = discovered.config
        elif exchange.model_id is not None:
            model = self._config.models[exchange.model_id]
        else:
            return False
        policy = self._runtime.policy(model.id) or model.prompt_optimization
        if policy == "off":
            return False
        if discovered is not None:
            assert self._ollama is not None
            size, source = await self._ollama.context(discovered)
            window: Window | None = Window(tokens=size, configured=size, source=source)
        else:
            key = (model.id, self._runtime.ctx_size(model.id))
            if key in self._window_of:
                window = self._window_of[key]
            else:
                gguf = await self._windows.gguf_context(model)
                # A model's command does not change while trioswap runs: its flags are read once
                # per runtime context size, not per request.
                window = self._window_of[key] = context_window(model, key[1], gguf)
        if window is None:
            if model.id not in self._no_window:
                self._no_window.add(model.id)
                log.info(
                    "model %s: context size unknown (no --ctx-size in its cmd, no "
                    "capabilities.context, no GGUF that says): prompts are not optimized",
                    model.id,
                )
            return False
        core = _core()
        counter = await self._counter(exchange, model, body, family)
        budget = self._budget(body, window)
        settings = core.Settings(
            policy,
            model.truncation_mode or "trim",
            budget,
            self._settings.target,
            self._settings.elide_over,
        )
        memory = self._memory(model.id)
        try:
            outcome = core.optimize(
                body,
                family,
                settings,
                counter.count,
                memory,
                per_message=counter.per_message,
                per_request=counter.per_request,
            )
        except core.TooLong as exc:
            raise PromptTooLong(model.id, exc.tokens, exc.budget, window.tokens) from None
        if policy == "llm_assisted" and outcome.trimmed and outcome.dropped:
            outcome = await self._summarized(exchange, model, body, family, counter, outcome)
        self._record(model, policy, window, counter, body, outcome)
        if outcome.changed:
            self._use(exchange, outcome, policy)

        sent = outcome.after

        def shrink(prompt_tokens: int, n_ctx: int) -> bool:
            return self._shrink(
                exchange, model, body, family, settings, counter, sent, prompt_tokens, n_ctx
            )

        exchange.shrink = shrink
        return False

    def _memory(self, model_id: str) -> Memory:
        memory = self._memories.get(model_id)
        if memory is None:
            memory = self._memories[model_id] = _core().Memory()
        return memory

    def _budget(self, body: Mapping[str, Any], window: Window) -> int:
        s = self._settings
        reserve = output_reserve(body, window.tokens, s.output_reserve, s.max_output_share)
        return prompt_budget(window, reserve, s.safety_margin, MIN_MARGIN)

    def _extensions_of(self, model: ModelConfig) -> dict[str, Any]:
        return self._extensions[PREFIX if model.id not in self._config.models else model.id]

    def _running_proxy(self, exchange: Exchange, model: ModelConfig) -> str | None:
        """Where the model's server answers now: Ollama always (it loads models when asked), a
        local model's server only while it runs."""
        if exchange.discovered is not None:
            return model.proxy
        if self._supervisor.state_of(model.id) is not ModelState.READY:
            return None
        return self._supervisor.statuses()[model.id].proxy

    async def _counter(
        self, exchange: Exchange, model: ModelConfig, body: Mapping[str, Any], family: Family
    ) -> Counter:
        """The model's counter, with this body's texts counted ahead (off the event loop, or by
        the server's /tokenize while it runs, when that is what counts) and, while the server
        runs, the chat template's overhead measured."""
        pool = self._pools(model.timeouts)
        extensions = self._extensions_of(model)
        discovered = exchange.discovered
        if discovered is not None:
            assert self._ollama is not None
            counter = await self._counters.vocabulary_counter(
                model.id, discovered.digest, partial(self._ollama.vocabulary, discovered)
            )
            await counter.prepare(texts_of(body, family), pool, model.proxy, extensions)
            return counter
        counter = await self._counters.counter(model)
        running = self._running_proxy(exchange, model)
        ready = running is not None
        proxy = running or model.proxy
        if ready:
            await self._counters.calibrate(model, pool, proxy, extensions)
        if ready or counter.source != "server":
            await counter.prepare(texts_of(body, family), pool, proxy, extensions)
        return counter

    async def _summarized(
        self,
        exchange: Exchange,
        model: ModelConfig,
        body: Mapping[str, Any],
        family: Family,
        counter: Counter,
        outcome: Outcome,
    ) -> Outcome:
        """`outcome` with its dropped turns summarized by the model, if it is running and
        answers in time; else as it is (limit_only's trim)."""
        proxy = self._running_proxy(exchange, model)
        if proxy is None:
            log.info("model %s: not running, so its dropped turns are not summarized", model.id)
            return outcome
        turns = _core().dropped_turns(body, family, outcome.dropped)
        if not turns:
            return outcome
        summaries = self._summaries[model.id]
        summary = summaries.cached(turns)
        if summary is None:
            complete = open_completer(
                self._pools(model.timeouts),
                proxy,
                model.use_model_name or model.id,
                max_tokens=self._settings.summary_max_tokens,
                extensions=self._extensions_of(model),
            )
            room = outcome.budget - 2 * self._settings.summary_max_tokens
            chunk = max(MIN_SUMMARY_CHUNK, 2 * room)
            started = time.monotonic()
            with trio.move_on_after(self._settings.summary_timeout) as scope:
                try:
                    summary = await summaries.summarize(turns, complete, max_chunk_chars=chunk)
                except SummaryFailed as exc:
                    log.warning("model %s: no summary of dropped turns: %s", model.id, exc)
                    return outcome
            if scope.cancelled_caught:
                log.warning(
                    "model %s: the summary of %d dropped turns took over %g s "
                    "(optimizer.summaryTimeout): trimmed as limit_only",
                    model.id,
                    len(turns),
                    self._settings.summary_timeout,
                )
                return outcome
            log.info(
                "model %s: %d dropped turns summarized in %.1f s",
                model.id,
                len(turns),
                time.monotonic() - started,
            )
        assert summary is not None
        summarized = _core().with_summary(
            outcome, family, summary, counter.count, counter.per_message
        )
        if summarized is None:
            log.info(
                "model %s: the summary does not fit the budget: trimmed as limit_only", model.id
            )
        return summarized or outcome

    def _use(self, exchange: Exchange, outcome: Outcome, policy: str) -> None:
        exchange.json = dict(outcome.body)
        exchange.body_changed = True
        report = f"{policy}; {outcome.before}->{outcome.after} tokens"
        headers = [(k, v) for k, v in exchange.sink.extra_headers if k != OPTIMIZED_HEADER]
        headers.append((OPTIMIZED_HEADER, report.encode()))
        exchange.sink.extra_headers = headers

    def _shrink(
        self,
        exchange: Exchange,
        model: ModelConfig,
        body: Mapping[str, Any],
        family: Family,
        settings: Settings,
        counter: Counter,
        sent: int,
        prompt_tokens: int,
        n_ctx: int,
    ) -> bool:
        """The server counted `prompt_tokens` (we counted `sent`) against its `n_ctx`: make the
        prompt fit what the server says, set it on `exchange`; False when it cannot shrink."""
        exchange.shrink = None
        s = self._settings
        reserve = output_reserve(body, n_ctx, s.output_reserve, s.max_output_share)
        fits = n_ctx - reserve - max(MIN_MARGIN, int(n_ctx * s.safety_margin))
        budget = min(int(fits * sent / max(prompt_tokens, 1)), int(sent * 0.9))
        if budget <= 0:
            return False
        core = _core()
        retry = core.Settings(settings.policy, "trim", budget, settings.target, settings.elide_over)
        outcome = core.optimize(
            body,
            family,
            retry,
            counter.count,
            self._memory(model.id),
            per_message=counter.per_message,
            per_request=counter.per_request,
        )
        if not outcome.changed or outcome.after >= sent:
            return False
        log.info(
            "model %s: its server counted %d prompt tokens for a %d-token context; trimmed "
            "from %d to %d of our tokens and sent again",
            model.id,
            prompt_tokens,
            n_ctx,
            sent,
            outcome.after,
        )
        translated = exchange.translation
        self._use(exchange, outcome, settings.policy)
        if translated is not None:
            translate(exchange, translated.codec)
        return True

    def _record(
        self,
        model: ModelConfig,
        policy: str,
        window: Window,
        counter: Counter,
        body: Mapping[str, Any],
        outcome: Outcome,
    ) -> None:
        self._runtime.record_snapshot(
            model.id,
            {
                "model": model.id,
                "policy": policy,
                "truncationMode": model.truncation_mode,
                "applied": outcome.changed,
                "trimmed": outcome.trimmed,
                "timestamp": time.time(),
                "tokens": {
                    "before": outcome.before,
                    "after": outcome.after,
                    "budget": outcome.budget,
                    "window": window.tokens,
                    "windowSource": window.source,
                    "counter": counter.source,
                },
                "overBudget": outcome.over,
                "actions": [
                    {"kind": a.kind, "index": a.index, "detail": a.detail, "tokensSaved": a.saved}
                    for a in outcome.actions
                ],
                # Kept as references, and cut to size only when shown (control.py).
                "request": body,
                "optimized": outcome.body,
            },
        )


def _core() -> ModuleType:
    """The pure optimizer, imported by the first request it works on rather than at startup
    (issue 12: exec -> a healthy /health as short as it can be)."""
    from trioswap.optimizer import core

    return core
