"""From the validated file to the resolved `Config`: llama-swap's meanings applied.

`ttl: -1` is globalTTL, a model's `unloadTimeout: 0` the global one, `healthCheckTimeout` is at
least 15, `setParamsByID` keys are aliases, the legacy top-level `groups` are the group router's
groups. Checks that span keys (aliases, group members, peer names) live here, with the line of
the key at fault.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trioswap.config import schema
from trioswap.config.keys import did_you_mean, fields_by_key, planned_note
from trioswap.config.resolved import (
    Capabilities,
    Config,
    Filters,
    GroupConfig,
    ModelConfig,
    ObserveSettings,
    OllamaSettings,
    OptimizerSettings,
    PeerConfig,
    PeerTarget,
    Timeouts,
)
from trioswap.config.routing import check_routing
from trioswap.config.yamlnodes import Node
from trioswap.discovery.ollama_host import DEFAULT_ENDPOINT, ollama_endpoint

if TYPE_CHECKING:
    from trioswap.config.reader import Problems

MIN_HEALTH_CHECK_TIMEOUT = 15.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The model name is how a request is routed: no filter may remove or set it.
_PROTECTED = "model"

WithPort = Callable[[str, int], ModelConfig]


class Resolver:
    def __init__(
        self,
        file: schema.File,
        document: Node,
        problems: Problems,
        path: str,
        environ: Mapping[str, str],
    ) -> None:
        self.file = file
        self.document = document
        self.problems = problems
        self.path = path
        self.environ = environ
        self.health_check_timeout = file.health_check_timeout
        if self.health_check_timeout < MIN_HEALTH_CHECK_TIMEOUT:
            self.warn(
                ("healthCheckTimeout",),
                f"{file.health_check_timeout:g} is raised to {MIN_HEALTH_CHECK_TIMEOUT:g} "
                "(llama-swap's minimum)",
            )
            self.health_check_timeout = MIN_HEALTH_CHECK_TIMEOUT

    # -- problems at the line of a key path ----------------------------------------------------

    def line(self, path: tuple[Any, ...]) -> tuple[int, str]:
        from trioswap.config.reader import locate

        return locate(self.document, path)

    def error(self, path: tuple[Any, ...], message: str) -> None:
        self.problems.error(*self.line(path), message)

    def warn(self, path: tuple[Any, ...], message: str) -> None:
        self.problems.warn(*self.line(path), message)

    # -- the whole file --------------------------------------------------------------------

    def config(self, ports: dict[str, int], with_port: WithPort) -> Config | None:
        f = self.file
        ollama = self.ollama()
        if not f.models and not f.peers and ollama is None:
            self.error(("models",), "at least one model (or peer, or ollama:) is required")
        models = {
            model_id: self.model(model_id, entry, ports.get(model_id), with_port)
            for model_id, entry in f.models.items()
        }
        aliases = self.aliases(models)
        groups = self.groups(models)
        peers = {peer_id: self.peer(peer_id, peer) for peer_id, peer in f.peers.items()}
        peer_models = self.peer_models(peers, models, aliases)
        check_routing(f, set(models), aliases, peer_models, groups, self.error, self.warn)
        for i, key in enumerate(f.api_keys):
            if not key.strip():
                self.error(("apiKeys", i), "an API key must not be empty")
            elif any(c.isspace() for c in key):
                self.error(("apiKeys", i), "an API key cannot contain spaces")
        return Config(
            path=self.path,
            models=models,
            groups=groups,
            aliases=aliases,
            peers=peers,
            peer_models=peer_models,
            health_check_timeout=self.health_check_timeout,
            start_port=f.start_port,
            log_level=f.log_level,
            log_time_format=f.log_time_format,
            log_to_stdout=f.log_to_stdout,
            global_ttl=f.global_ttl,
            unload_timeout=f.unload_timeout,
            drain_timeout=f.drain_timeout,
            include_aliases_in_list=f.include_aliases_in_list,
            api_keys=tuple(f.api_keys),
            preload=self.preload(models, aliases),
            send_loading_state=f.send_loading_state,
            max_request_body=int(f.max_request_body_mb * schema.MIB),
            request_body_timeout=f.request_body_timeout,
            shutdown_timeout=f.shutdown_timeout,
            listen_backlog=f.listen_backlog,
            cors_origins=tuple(o.rstrip("/") for o in f.cors.origins),
            allowed_hosts=tuple(h.lower() for h in f.allowed_hosts),
            upstream_ignore_paths=tuple(re.compile(p) for p in f.upstream.ignore_paths),
            optimizer=OptimizerSettings(
                output_reserve=f.optimizer.output_reserve,
                max_output_share=f.optimizer.max_output_share,
                safety_margin=f.optimizer.safety_margin,
                target=f.optimizer.target,
                elide_over=f.optimizer.elide_over,
                summary_timeout=f.optimizer.summary_timeout,
                summary_max_tokens=f.optimizer.summary_max_tokens,
            ),
            prompt_optimization=f.prompt_optimization,
            observe=self.observe(),
            ollama=ollama,
            warnings=tuple(self.problems.warnings),
            document=self.resolved_document(models, groups, ollama),
        )

    def observe(self) -> ObserveSettings:
        f = self.file
        store = None
        if f.store is not None:
            # Beside the config, wherever trioswap is started from.
            store = str(Path(self.path).parent / Path(f.store.path).expanduser())
        return ObserveSettings(
            max_in_memory=f.metrics_max_in_memory,
            store_path=store,
            capture_bytes=int(f.capture_buffer * schema.MIB),
            session_headers=tuple(f.ui.activity.session_id),
            performance_disabled=f.performance.disabled,
            performance_every=float(f.performance.every),
        )

    def model(
        self, model_id: str, m: schema.Model, port: int | None, with_port: WithPort
    ) -> ModelConfig:
        key = ("models", model_id)
        if not model_id.strip():
            self.error(key, "a model id must not be empty")
        f = self.file
        env: dict[str, str] = {}
        for i, entry in enumerate(m.env):
            name, sep, value = entry.partition("=")
            if not sep or not _ENV_NAME.match(name):
                self.warn((*key, "env", i), f"not KEY=value, ignored: {entry!r}")
            else:
                env[name] = value
        caps = m.capabilities
        capabilities = None
        if caps.inputs or caps.outputs or caps.tools or caps.reranker or caps.context:
            capabilities = Capabilities(
                tuple(caps.inputs), tuple(caps.outputs), caps.tools, caps.reranker, caps.context
            )
        check = m.check_endpoint.strip()
        policy, truncation = self.optimization(m, key)
        return ModelConfig(
            id=model_id,
            cmd=self.command(m.cmd, (*key, "cmd")),
            cmd_stop=self.command(m.cmd_stop, (*key, "cmdStop")) if m.cmd_stop else None,
            proxy=m.proxy.rstrip("/"),
            check_endpoint=None if check.lower() == "none" else "/" + check.lstrip("/"),
            ttl=f.global_ttl if m.ttl == -1 else m.ttl,
            unload_timeout=m.unload_timeout or f.unload_timeout,
            aliases=tuple(m.aliases),
            env=env,
            port=port,
            unlisted=m.unlisted,
            use_model_name=m.use_model_name or None,
            name=m.name or None,
            description=m.description or None,
            metadata=m.metadata,
            filters=self.filters(m.filters, (*key, "filters")),
            concurrency_limit=m.concurrency_limit,
            prompt_optimization=policy,
            truncation_mode=truncation,
            tokenizer=m.tokenizer or None,
            send_loading_state=(
                f.send_loading_state if m.send_loading_state is None else m.send_loading_state
            ),
            timeouts=timeouts(m.timeouts),
            capabilities=capabilities,
            ignore_websockets=m.compat.ignore_websockets,
            apis={"anthropic": m.apis.anthropic, "responses": m.apis.responses},
            with_port=partial(with_port, model_id) if port is not None else None,
        )

    def optimization(self, m: schema.Model, key: tuple[Any, ...]) -> tuple[str, str | None]:
        """The model's policy and truncation mode; a policy written as truncationMode (as
        trioswap read it before promptOptimization) is taken as the policy, with a warning."""
        policy = m.prompt_optimization or self.file.prompt_optimization
        truncation = m.truncation_mode
        if truncation in schema.POLICIES:
            self.warn(
                (*key, "truncationMode"),
                f"{truncation!r} is a policy: write promptOptimization: {truncation} "
                "(truncationMode is now sliding_window or strict_error)",
            )
            policy = m.prompt_optimization or truncation
            truncation = None
        return policy, truncation

    def command(self, text: str, path: tuple[Any, ...]) -> tuple[str, ...]:
        # A trailing backslash continues the line, as in a shell script.
        joined = " ".join(line.strip().removesuffix("\\") for line in text.splitlines())
        try:
            parts = tuple(shlex.split(joined))
        except ValueError as exc:
            self.error(path, f"cannot split into arguments: {exc}")
            return ()
        if not parts:
            self.error(path, "the command is empty")
        return parts

    def filters(self, f: schema.Filters, path: tuple[Any, ...]) -> Filters:
        raw = f.strip_params.split(",") if isinstance(f.strip_params, str) else f.strip_params
        strip = sorted({p.strip() for p in raw if p.strip() and p.strip() != _PROTECTED})
        set_params = dict(f.set_params)
        if set_params.pop(_PROTECTED, None) is not None:
            self.warn(
                (*path, "setParams", _PROTECTED),
                "ignored: the model name is set with useModelName",
            )
        by_id: dict[str, dict[str, Any]] = {}
        for name, params in getattr(f, "set_params_by_id", {}).items():
            params = dict(params)
            if params.pop(_PROTECTED, None) is not None:
                self.warn(
                    (*path, "setParamsByID", name, _PROTECTED),
                    "ignored: the model name is set with useModelName",
                )
            by_id[name] = params
        return Filters(strip_params=tuple(strip), set_params=set_params, set_params_by_id=by_id)

    def aliases(self, models: dict[str, ModelConfig]) -> dict[str, str]:
        aliases: dict[str, str] = {}
        for model in models.values():
            key = ("models", model.id)
            for i, alias in enumerate(model.aliases):
                if alias in models:
                    self.error((*key, "aliases", i), f"alias {alias!r} is already a model id")
                elif alias in aliases and aliases[alias] != model.id:
                    self.error(
                        (*key, "aliases", i),
                        f"alias {alias!r} is also an alias of {aliases[alias]!r}",
                    )
                else:
                    aliases[alias] = model.id
        # setParamsByID keys are aliases too (llama-swap registers them).
        for model in models.values():
            for name in model.filters.set_params_by_id:
                where = ("models", model.id, "filters", "setParamsByID", name)
                if name == model.id:
                    continue
                if name in models:
                    self.error(where, f"{name!r} is another model's id")
                elif aliases.get(name, model.id) != model.id:
                    self.error(where, f"{name!r} is already an alias of {aliases[name]!r}")
                else:
                    aliases[name] = model.id
        return aliases

    def groups(self, models: dict[str, ModelConfig]) -> dict[str, GroupConfig]:
        f = self.file
        router = f.routing.router
        legacy = bool(f.groups) or f.matrix is not None
        in_routing = "router" in self._document_keys("routing")
        if legacy and in_routing:
            self.error(
                ("groups",) if f.groups else ("matrix",),
                "both the top-level groups/matrix and routing.router are set: move the "
                "top-level one under routing.router.settings",
            )
        elif f.groups:
            self.warn(("groups",), "deprecated: write routing.router.settings.groups")
        elif f.matrix is not None:
            self.warn(("matrix",), "deprecated: write routing.router.settings.matrix")
        if f.groups:
            source: dict[str, schema.Group] = f.groups
            base: tuple[Any, ...] = ("groups",)
        else:
            source = router.settings.groups
            base = ("routing", "router", "settings", "groups")
        groups: dict[str, GroupConfig] = {}
        owner: dict[str, str] = {}
        for group_id, g in source.items():
            members = []
            for i, member in enumerate(g.members):
                where = (*base, group_id, "members", i)
                if member not in models:
                    self.warn(
                        where,
                        f"unknown model {member!r}, ignored" + did_you_mean(member, list(models)),
                    )
                elif member in members:
                    self.error(where, f"model {member!r} is listed twice")
                elif member in owner:
                    self.error(where, f"model {member!r} is already in group {owner[member]!r}")
                else:
                    owner[member] = group_id
                    members.append(member)
            groups[group_id] = GroupConfig(
                group_id, tuple(members), g.swap, g.exclusive, g.persistent
            )
        return groups

    def _document_keys(self, *path: str) -> set[str]:
        node = self.document
        for part in path:
            if not isinstance(node.value, dict) or part not in node.value:
                return set()
            node = node.value[part]
        return set(node.value) if isinstance(node.value, dict) else set()

    def ollama(self) -> OllamaSettings | None:
        """Discovery is on with an `ollama` key (unless `enabled: false`), or without one when
        OLLAMA_HOST is set; the endpoint is the key's, else OLLAMA_HOST's, else the default."""
        o = self.file.ollama
        host = self.environ.get("OLLAMA_HOST", "").strip()
        if o is None:
            if not host:
                return None
            o = schema.Ollama()
        if not o.enabled:
            return None
        endpoint, source = DEFAULT_ENDPOINT, "default"
        if o.endpoint is not None:
            try:
                endpoint, source = ollama_endpoint(o.endpoint), "config"
            except ValueError as exc:
                self.error(("ollama", "endpoint"), _reason(exc))
        elif host:
            try:
                endpoint, source = ollama_endpoint(host), "OLLAMA_HOST"
            except ValueError as exc:
                # The variable may be meant for other Ollama clients: not worth refusing to start.
                self.problems.warn(
                    None,
                    "",
                    f"the environment variable OLLAMA_HOST={host!r} is not an Ollama address "
                    f"({_reason(exc)}): the default {DEFAULT_ENDPOINT} is used",
                )
        return OllamaSettings(
            endpoint=endpoint,
            refresh=float(o.refresh),
            source=source,
            # A local model server's, not a peer's: Ollama loads a model before it answers.
            timeouts=timeouts(schema.Timeouts()),
        )

    def peer(self, peer_id: str, p: schema.Peer) -> PeerConfig:
        return PeerConfig(
            id=peer_id,
            proxy=p.proxy.rstrip("/"),
            api_key=p.api_key,
            models=tuple(dict.fromkeys(p.models)),
            filters=self.filters(p.filters, ("peers", peer_id, "filters")),
            timeouts=timeouts(p.timeouts),
        )

    def peer_models(
        self,
        peers: dict[str, PeerConfig],
        models: dict[str, ModelConfig],
        aliases: dict[str, str],
    ) -> dict[str, PeerTarget]:
        qualified: dict[str, PeerTarget] = {}
        bare: dict[str, list[PeerTarget]] = {}
        for peer in peers.values():
            for i, model in enumerate(peer.models):
                name = f"{peer.id}/{model}"
                where = ("peers", peer.id, "models", i)
                if name in qualified:
                    other = qualified[name]
                    self.error(
                        where,
                        f"{name!r} also names peer {other.peer.id!r}'s model {other.model!r}",
                    )
                elif name in models or name in aliases:
                    self.error(where, f"{name!r} is also a local model id or alias")
                else:
                    qualified[name] = PeerTarget(peer, model)
                bare.setdefault(model, []).append(PeerTarget(peer, model))
        for model, targets in bare.items():
            if len(targets) == 1 and model not in models and model not in aliases:
                qualified.setdefault(model, targets[0])
        return qualified

    def preload(self, models: dict[str, ModelConfig], aliases: dict[str, str]) -> tuple[str, ...]:
        out = []
        for i, name in enumerate(self.file.hooks.on_startup.preload):
            name = name.strip()
            target = name if name in models else aliases.get(name)
            if target is None:
                self.warn(
                    ("hooks", "on_startup", "preload", i),
                    f"unknown model {name!r}, not preloaded" + did_you_mean(name, list(models)),
                )
            elif target not in out:
                out.append(target)
        return tuple(out)

    def resolved_document(
        self,
        models: dict[str, ModelConfig],
        groups: dict[str, GroupConfig],
        ollama: OllamaSettings | None,
    ) -> dict[str, Any]:
        """The file as trioswap understands it, in the file's own keys: defaults filled in,
        inherited values resolved, legacy keys moved to where they live now."""
        doc = self.file.model_dump(mode="json", by_alias=True)
        # Keys trioswap does not act on yet appear only if the file has them: loading this
        # document again must not warn about what the user never wrote.
        keys = fields_by_key(schema.File)
        for name, info in schema.File.model_fields.items():
            key = info.alias or name
            if name not in self.file.model_fields_set and planned_note(*keys[key]):
                doc.pop(key, None)
        doc["healthCheckTimeout"] = self.health_check_timeout
        for model_id, entry in doc["models"].items():
            model = models[model_id]
            entry["ttl"] = model.ttl
            entry["unloadTimeout"] = model.unload_timeout
            entry["sendLoadingState"] = model.send_loading_state
        settings = doc["routing"]["router"]["settings"]
        settings["groups"] = {
            g.id: {
                "swap": g.swap,
                "exclusive": g.exclusive,
                "persistent": g.persistent,
                "members": list(g.members),
            }
            for g in groups.values()
        }
        if doc.pop("matrix", None) is not None and settings.get("matrix") is None:
            settings["matrix"] = self.file.matrix.model_dump(mode="json", by_alias=True)  # type: ignore[union-attr]
        doc.pop("groups", None)
        if ollama is not None:
            doc["ollama"] = {
                "endpoint": ollama.endpoint,
                "enabled": True,
                "refresh": ollama.refresh,
            }
        elif self.file.ollama is None:
            doc.pop("ollama")  # `ollama: null` would turn discovery on
        return doc


def _reason(exc: ValueError) -> str:
    # ollama_endpoint's messages name OLLAMA_HOST, which the file's key is not.
    return str(exc).removeprefix("OLLAMA_HOST: ")


def timeouts(t: schema.Timeouts) -> Timeouts:
    """0 in the file means no bound."""
    return Timeouts(
        connect=t.connect or None,
        response_header=t.response_header or None,
        keepalive=t.keepalive or None,
        tls_handshake=t.tls_handshake or None,
        idle_conn=t.idle_conn or None,
    )
