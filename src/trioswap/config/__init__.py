"""The config file: llama-swap's YAML format, declared once in `schema.py`.

reader.py    YAML → key check (keys.py) → macros and ports (macros.py) → validation →
             llama-swap's meanings (resolve.py) → `Config` (resolved.py)
view.py      what `trioswap validate` and `trioswap schema` print
routing.py   checks for the routing engines that are parsed but not active yet
"""

from trioswap.config.reader import PORT_SPAN, load, load_dir, loads
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
from trioswap.config.schema import LOG_LEVELS, LOG_TO_STDOUT, MIB, POLICIES, TRUNCATION_MODES
from trioswap.config.view import json_schema, redacted, summary

__all__ = [
    "LOG_LEVELS",
    "LOG_TO_STDOUT",
    "MIB",
    "POLICIES",
    "PORT_SPAN",
    "TRUNCATION_MODES",
    "Capabilities",
    "Config",
    "Filters",
    "GroupConfig",
    "ModelConfig",
    "ObserveSettings",
    "OllamaSettings",
    "OptimizerSettings",
    "PeerConfig",
    "PeerTarget",
    "Timeouts",
    "json_schema",
    "load",
    "load_dir",
    "loads",
    "redacted",
    "summary",
]
