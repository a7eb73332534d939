"""The web UI under /ui: pages rendered from the Jinja templates in `static_ui/templates`, the
hand-written ES modules and stylesheet in `static_ui/static`, and the vendored libraries in
`static_ui/vendor` (no Node at any time).

Pages are server-rendered shells; what they show comes from the public JSON APIs, fetched by
small modules, except the models table, which htmx refreshes from a server-rendered fragment
(`/ui/fragments/models`) whenever an event or the polling fallback says models changed. Every
link and fetch starts with the page's base path: a valid `X-Forwarded-Prefix` (a reverse proxy
serving trioswap under a prefix), else the ASGI `root_path`, so the UI works behind nginx
without absolute URLs. Templates and assets are read once, when the app is built.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

import jinja2
from quart import Response, request
from quart_trio import QuartTrio

from trioswap.assets import data_folder
from trioswap.config import Config, ModelConfig
from trioswap.discovery.ollama import Ollama
from trioswap.protocols.models import render_capabilities
from trioswap.supervisor import ModelState, ModelStatus, Supervisor

# The navigation, in order: (page id, label). The Models page is also the UI's front page.
NAV = (
    ("models", "Models"),
    ("playground", "Playground"),
    ("activity", "Activity"),
    ("logs", "Logs"),
    ("settings", "Settings"),
    ("performance", "Performance"),
)
POLICIES = ("off", "limit_only", "always", "llm_assisted")

# A prefix is a plain absolute path: no scheme or host, no empty, dot or percent-encoded
# segments (a browser would resolve `%2e%2e` as `..`), no quotes or markup characters.
_PREFIX = re.compile(r"(?:/[A-Za-z0-9_~+-][A-Za-z0-9._~+-]*)+")
PREFIX_MAX = 256

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        # uPlot sizes its canvas and legend through style attributes.
        "style-src 'self' 'unsafe-inline'",
        # Generated images and speech arrive as data: or blob: URLs.
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
    "Vary": "X-Forwarded-Prefix",
}
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_PLAIN_TEXT = "text/plain; charset=utf-8"  # LICENSE files have no extension


def base_path(forwarded_prefix: str | None, root_path: str) -> str:
    """Where the UI's URLs start: `X-Forwarded-Prefix` when it is a valid path, else the ASGI
    root path when it is, else nothing. Never ends with a slash."""
    for candidate in (forwarded_prefix, root_path):
        if not candidate or len(candidate) > PREFIX_MAX:
            continue
        path = candidate.rstrip("/")
        if path == "" and candidate.startswith("/"):
            return ""
        if _PREFIX.fullmatch(path) and all(s not in (".", "..") for s in path.split("/")):
            return path
    return ""


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def read_assets(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    """Every file under `folder`, by its path relative to it."""
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            found.update(read_assets(entry, name + "/"))
            continue
        body = entry.read_bytes()
        dot = entry.name.rfind(".")
        extension = entry.name[dot:].lower() if dot > 0 else ""
        content_type = _CONTENT_TYPES.get(extension, _PLAIN_TEXT if dot < 0 else "")
        if not content_type:
            continue  # not something the UI serves
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        found[name] = Asset(body, content_type, etag)
    return found


def read_templates(folder: Traversable, prefix: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            found.update(read_templates(entry, name + "/"))
        elif entry.name.endswith(".html"):
            found[name] = entry.read_text(encoding="utf-8")
    return found


@dataclass(frozen=True)
class ModelRow:
    """One model as the Models page shows it."""

    id: str
    name: str
    description: str
    kind: str  # "model", "peer" or "ollama"
    state: str  # a ModelState's value; "remote" for a peer's model
    proxy: str
    pid: int | None = None
    uptime: float | None = None
    ttl: float | None = None
    ttl_left: float | None = None
    in_flight: int | None = None
    waiting: int | None = None
    last_error: str | None = None
    aliases: tuple[str, ...] = ()
    unlisted: bool = False

    @property
    def external(self) -> bool:
        """Started and stopped elsewhere (by a peer, or by Ollama): read-only here."""
        return self.kind != "model"

    @property
    def can_load(self) -> bool:
        return not self.external and self.state in (ModelState.STOPPED, ModelState.FAILED)

    @property
    def can_unload(self) -> bool:
        return not self.external and self.state not in (ModelState.STOPPED, ModelState.FAILED)


def model_rows(
    config: Config, statuses: Mapping[str, ModelStatus], ollama: Ollama | None
) -> list[ModelRow]:
    """Local models (by name, then id), then peers' and Ollama's."""
    now = time.time()
    rows = [_local_row(model, statuses.get(model.id), now) for model in config.models.values()]
    rows.sort(key=lambda row: (row.name.casefold() or row.id.casefold(), row.id))
    for peer in config.peers.values():
        for name in peer.models:
            rows.append(
                ModelRow(
                    f"{peer.id}/{name}", f"{peer.id}: {name}", "", "peer", "remote", peer.proxy
                )
            )
    if ollama is not None:
        loaded = ollama.loaded()
        for found in ollama.models():
            state = ModelState.READY if found.name in loaded else ModelState.STOPPED
            rows.append(ModelRow(found.id, found.name, "", "ollama", state.value, ollama.endpoint))
    return rows


def _local_row(model: ModelConfig, status: ModelStatus | None, now: float) -> ModelRow:
    return ModelRow(
        id=model.id,
        name=(model.name or "").strip(),
        description=(model.description or "").strip(),
        kind="model",
        state=ModelState.STOPPED.value if status is None else status.state.value,
        proxy=model.proxy if status is None else status.proxy,
        pid=None if status is None else status.pid,
        uptime=None if status is None or status.ready_since is None else now - status.ready_since,
        ttl=model.ttl,
        ttl_left=None if status is None else status.ttl_left,
        in_flight=None if status is None else status.in_flight,
        waiting=None if status is None else status.waiting,
        last_error=None if status is None else status.last_error,
        aliases=model.aliases,
        unlisted=model.unlisted,
    )


def _duration(seconds: float | None) -> str:
    """300 → "5m"; 90 → "1m 30s"; 0 or None → "" (no ttl)."""
    if not seconds or seconds <= 0:
        return ""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return " ".join(f"{amount}{unit}" for amount, unit in parts if amount) or f"{seconds:g}s"


def register_ui(
    app: QuartTrio, config: Config, supervisor: Supervisor, ollama: Ollama | None = None
) -> None:
    """Add the UI's routes to `app`: `/` and `/ui` redirect to `/ui/`, the pages, the models
    fragment and the static files."""
    folder = data_folder("static_ui")
    assets = {
        "static": read_assets(folder / "static"),
        "vendor": read_assets(folder / "vendor"),
    }
    environment = jinja2.Environment(
        loader=jinja2.DictLoader(read_templates(folder / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["duration"] = _duration

    def base() -> str:
        return base_path(request.headers.get("X-Forwarded-Prefix"), request.root_path)

    def render(template: str, status: int = 200, **context: Any) -> Response:
        page = environment.get_template(template).render(base=base(), nav=NAV, **context)
        response = Response(page, status, mimetype="text/html")
        response.headers.update(_PAGE_HEADERS)
        return response

    def redirect_to_ui() -> Response:
        return Response("", 302, headers={"Location": base() + "/ui/", "Cache-Control": "no-cache"})

    def rows() -> list[ModelRow]:
        return model_rows(config, supervisor.statuses(), ollama)

    app.add_url_rule("/", "ui_root", redirect_to_ui, methods=["GET"])
    app.add_url_rule("/ui", "ui_bare", redirect_to_ui, methods=["GET"])

    @app.get("/ui/")
    @app.get("/ui/models")
    async def models_page() -> Response:
        return render("models.html", page="models", title="Models", rows=rows())

    @app.get("/ui/fragments/models")
    async def models_fragment() -> Response:
        wanted = request.args.get("model")
        shown = [row for row in rows() if wanted is None or row.id == wanted]
        return render("fragments/model_rows.html", rows=shown, single=wanted is not None)

    @app.get("/ui/models/<path:model_id>")
    async def model_page(model_id: str) -> Response:
        # An alias shows the model it names.
        wanted = {model_id, config.resolve(model_id)}
        row = next((r for r in rows() if r.id in wanted), None)
        if row is None:
            return render(
                "not_found.html", 404, page="models", title="No such model", what=model_id
            )
        model = config.models.get(row.id)
        details = _details(config, model)
        return render(
            "model.html",
            page="models",
            title=row.id,
            row=row,
            rows=[row],
            details=details,
            logs_source=row.id if model is not None else None,
        )

    @app.get("/ui/playground")
    async def playground_page() -> Response:
        return render("playground.html", page="playground", title="Playground")

    @app.get("/ui/activity")
    async def activity_page() -> Response:
        return render("activity.html", page="activity", title="Activity")

    @app.get("/ui/logs")
    async def logs_page() -> Response:
        return render("logs.html", page="logs", title="Logs", models=sorted(config.models))

    @app.get("/ui/settings")
    async def settings_page() -> Response:
        models = [
            {"id": m.id, "name": m.name or "", "configured": m.prompt_optimization}
            for m in sorted(config.models.values(), key=lambda m: m.id)
        ]
        discovered = [] if ollama is None else sorted(found.id for found in ollama.models())
        peers = sorted(f"{p.id}/{name}" for p in config.peers.values() for name in p.models)
        return render(
            "settings.html",
            page="settings",
            title="Settings",
            models=models,
            discovered=discovered,
            peers=peers,
            policies=POLICIES,
            default_policy=config.prompt_optimization,
        )

    @app.get("/ui/performance")
    async def performance_page() -> Response:
        return render("performance.html", page="performance", title="Performance")

    @app.get("/ui/<path:rest>")
    async def no_page(rest: str) -> Response:
        return render("not_found.html", 404, page="", title="Not found", what=rest)

    @app.get("/ui/<any(static, vendor):kind>/<path:name>")
    async def asset(kind: str, name: str) -> Response:
        found = assets[kind].get(name)
        if found is None:
            return render("not_found.html", 404, page="", title="Not found", what=name)
        headers = {
            "ETag": found.etag,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        }
        if found.etag in request.headers.get("If-None-Match", ""):
            return Response("", 304, headers=headers)
        return Response(found.body, 200, headers={**headers, "Content-Type": found.content_type})


def _details(config: Config, model: ModelConfig | None) -> list[tuple[str, str]]:
    """A local model's configuration as (label, text) pairs for its page."""
    if model is None:
        return []
    groups = [g.id for g in config.groups.values() if model.id in g.members]
    caps = {} if model.capabilities is None else render_capabilities(model.capabilities)
    pairs = [
        ("Name", model.name or ""),
        ("Description", model.description or ""),
        ("Aliases", ", ".join(model.aliases)),
        ("Groups", ", ".join(groups)),
        ("Proxy", model.proxy),
        ("TTL", _duration(model.ttl) or "never unloaded for idleness"),
        ("Concurrency limit", str(model.concurrency_limit or "")),
        ("Prompt optimization", model.prompt_optimization),
        ("Capabilities", ", ".join(sorted(caps.get("capabilities", {})))),
        ("Context length", str(caps.get("context_length", ""))),
        ("APIs", ", ".join(f"{family}: {mode}" for family, mode in model.apis.items())),
        ("Unlisted", "yes" if model.unlisted else ""),
    ]
    return [(label, text) for label, text in pairs if text]
