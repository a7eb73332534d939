"""A GGUF model file's tokenizer as a HuggingFace `tokenizers.Tokenizer` giving llama.cpp's ids,
and the file's trained context length.

Only the file's metadata section is read, never its tensors. The `gguf` package's `GGUFReader`
parses every array item into its own numpy view (4 s for SmolLM2's 49k-token vocabulary, and
vocabularies reach 250k), so this module walks the metadata itself with the package's
constants: SmolLM2's in 0.1 s.

llama.cpp's BPE tokenizer (`src/llama-vocab.cpp`, `tokenizer.ggml.model` = gpt2) is rebuilt from
its parts: special tokens (control, user-defined, unknown) split out first and always parsed,
as llama-server parses them in prompts and in `/tokenize`; then the `tokenizer.ggml.pre` type's
list of regexes, each splitting the pieces of the one before (llama.cpp's
`LLAMA_VOCAB_PRE_TYPE_*` lists, in the form llama.cpp runs them); then GPT-2's byte-to-character
mapping and BPE by merge rank, whole pieces first where llama.cpp ignores merges. Other vocab
types and pre types raise `UnsupportedVocab`.

Building takes seconds, so a built tokenizer is kept as tokenizer.json in a cache folder, under
the model file's identity (resolved path, size, mtime, inode); later starts load it in
milliseconds. Everything here blocks: callers run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gguf import GGUF_MAGIC, GGUFValueType, Keys, TokenType
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

# Bump when the built tokenizer changes, so that caches from older builds are not used.
BUILD_VERSION = 1


class UnsupportedVocab(ValueError):
    """The file's tokenizer is not one this module can reproduce exactly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# llama.cpp's pre-tokenizer regexes, each applied to the pieces the one before made.
_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_QWEN2 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_QWEN35 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp's stand-ins for \p{Lu}… (std::regex has no Unicode classes): upper = a letter not
# in a-z, lower = a letter not in A-Z.
_UPPER = r"((?=[\p{L}])([^a-z]))"
_LOWER = r"((?=[\p{L}])([^A-Z]))"
_GPT4O = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _family(
    names: str, regexes: list[str], ignore_merges: bool = False
) -> dict[str, tuple[list[str], bool]]:
    return {name: (regexes, ignore_merges) for name in names.split()}


# `tokenizer.ggml.pre` → (regexes, whether a piece found whole in the vocabulary skips merging).
PRE_TYPES: dict[str, tuple[list[str], bool]] = {
    **_family("default", [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
    **_family(
        "gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert "
        "mpt olmo jais trillion granite-docling exaone4 jina-v1-en jina-v2-code roberta-bpe",
        [_GPT2],
    ),
    **_family(
        "smollm starcoder refact command-r codeshell exaone minerva-7b mellum2", [r"\p{N}", _GPT2]
    ),
    **_family(
        "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano",
        [_LLAMA3],
        ignore_merges=True,
    ),
    **_family("dbrx smaug-bpe glm4 chatglm-bpe", [_LLAMA3]),
    **_family(
        "qwen2 deepseek-r1-qwen kormo f2llmv2 megrez stablelm2 hunyuan solar-open grok-2", [_QWEN2]
    ),
    **_family("qwen35", [_QWEN35]),
    **_family("falcon", [r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"]),
    **_family("gpt-4o llama4 kanana2 talkie minimax-m2", [_GPT4O]),
    **_family("tekken", [_TEKKEN], ignore_merges=True),
}
PRE_TYPES[""] = PRE_TYPES["default"]  # a file without a pre type: llama.cpp's default

# Tokens llama.cpp makes control tokens by their text, whatever the file says (end of
# generation markers, gpt-oss's channel tokens); special either way, so parsed in prompts.
_SPECIAL_BY_TEXT = frozenset(
    [
        *("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>"),
        *("<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>"),
        *("_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>"),
        *("<turn|>", "<|tool_response>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~["),
        *("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"),
    ]
)
_SPECIAL_TYPES = frozenset({TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN})

_VOCAB_ARRAYS = frozenset({Keys.Tokenizer.LIST, Keys.Tokenizer.TOKEN_TYPE, Keys.Tokenizer.MERGES})


def context_length(path: str | os.PathLike[str]) -> int | None:
    """The context length the model was trained for (`<arch>.context_length`), if it says."""
    meta = read_metadata(path)
    arch = meta.get(Keys.General.ARCHITECTURE)
    value = meta.get(Keys.LLM.CONTEXT_LENGTH.format(arch=arch)) if isinstance(arch, str) else None
    return value if isinstance(value, int) and value > 0 else None


def cached_tokenizer_path(path: str | os.PathLike[str], cache_dir: Path) -> Path:
    """Where the tokenizer built from the model file at `path` is kept."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    identity = f"{BUILD_VERSION}\0{resolved}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
    return cache_dir / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.tokenizer.json"


def load_tokenizer(path: str | os.PathLike[str], cache_dir: Path) -> Tokenizer:
    """The model file's tokenizer: from the cache, or built and then cached."""
    cached = cached_tokenizer_path(path, cache_dir)
    try:
        return Tokenizer.from_file(str(cached))
    except Exception:
        pass  # not cached yet, or unreadable: build it again
    tokenizer = build_tokenizer(read_metadata(path, _VOCAB_ARRAYS))
    save_tokenizer(tokenizer, cached)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    """Written whole or not at all: another trioswap may read the cache at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as out:
        out.write(tokenizer.to_str())
    os.replace(out.name, path)


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """llama.cpp's tokenizer for a file with this metadata (`read_metadata` with the vocab)."""
    kind = meta.get(Keys.Tokenizer.MODEL)
    if kind != "gpt2":
        raise UnsupportedVocab(f"tokenizer.ggml.model {kind!r} (only gpt2 BPE is supported)")
    pre = meta.get(Keys.Tokenizer.PRE, "")
    if pre not in PRE_TYPES:
        raise UnsupportedVocab(f"tokenizer.ggml.pre {pre!r} is not supported")
    regexes, ignore_merges = PRE_TYPES[pre]
    tokens: list[str] = meta.get(Keys.Tokenizer.LIST) or []
    merges: list[str] = meta.get(Keys.Tokenizer.MERGES) or []
    if not tokens or not merges:
        raise UnsupportedVocab("the file has no tokenizer.ggml.tokens or tokenizer.ggml.merges")
    vocab = {text: i for i, text in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise UnsupportedVocab("the vocabulary has duplicate tokens")
    model = models.BPE(vocab=vocab, merges=_pairs(merges), ignore_merges=ignore_merges)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    types = meta.get(Keys.Tokenizer.TOKEN_TYPE) or []
    special = [
        text
        for i, text in enumerate(tokens)
        if text in _SPECIAL_BY_TEXT or (i < len(types) and types[i] in _SPECIAL_TYPES)
    ]
    tokenizer.add_special_tokens(
        [AddedToken(text, special=True, normalized=False) for text in special]
    )
    return tokenizer


def _pairs(merges: Iterable[str]) -> list[tuple[str, str]]:
    # As llama.cpp splits them: at the first space after the first character.
    pairs = []
    for merge in merges:
        cut = merge.find(" ", 1)
        if cut < 0:
            raise UnsupportedVocab(f"malformed merge {merge[:40]!r}")
        pairs.append((merge[:cut], merge[cut + 1 :]))
    return pairs


# GGUF scalar types → struct format characters.
_SCALAR = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


def read_metadata(
    path: str | os.PathLike[str], arrays: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The file's metadata: every scalar and string value, and the arrays named in `arrays`
    (others are skipped). Raises ValueError for a file that is not GGUF (v2 or later)."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _Reader(data).metadata(arrays)


class _Reader:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.offset = 0
        self.order = "<"

    def metadata(self, arrays: frozenset[str]) -> dict[str, Any]:
        try:
            (magic,) = self._unpack("I")
            if magic != GGUF_MAGIC:
                raise ValueError("not a GGUF file")
            (version,) = self._unpack("I")
            if version & 0xFFFF == 0:  # written on a big-endian machine
                self.order = ">"
                version = int.from_bytes(version.to_bytes(4, "little"), "big")
            if version < 2:
                raise ValueError(f"GGUF version {version} is too old")
            _tensors, count = self._unpack("QQ")
            meta: dict[str, Any] = {}
            for _ in range(count):
                key = self._string()
                (kind,) = self._unpack("I")
                value = self._value(kind, keep=key in arrays)
                if value is not None:
                    meta[key] = value
            return meta
        except (struct.error, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed GGUF metadata: {exc}") from exc

    def _unpack(self, fmt: str) -> tuple[Any, ...]:
        fmt = self.order + fmt
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (size,) = self._unpack("Q")
        end = self.offset + size
        if end > len(self.data):
            raise ValueError("malformed GGUF metadata: a string runs past the end")
        text = self.data[self.offset : end].decode()
        self.offset = end
        return text

    def _value(self, kind: int, keep: bool = True) -> Any:
        """The value; for an array not to `keep`, None (it is skipped)."""
        if kind == GGUFValueType.STRING:
            return self._string()
        if kind == GGUFValueType.ARRAY:
            return self._array(keep)
        if kind not in _SCALAR:
            raise ValueError(f"malformed GGUF metadata: unknown value type {kind}")
        return self._unpack(_SCALAR[GGUFValueType(kind)])[0]

    def _array(self, keep: bool) -> list[Any] | None:
        kind, count = self._unpack("IQ")
        if kind in _SCALAR:
            fmt = f"{count}{_SCALAR[GGUFValueType(kind)]}"
            if not keep:
                self.offset += struct.calcsize(fmt)
                return None
            return list(self._unpack(fmt))
        if kind == GGUFValueType.STRING and not keep:
            for _ in range(count):
                (size,) = self._unpack("Q")
                self.offset += size
            return None
        return [self._value(kind) for _ in range(count)]
