"""OLLAMA_HOST's forms, read as Ollama's client reads them."""

from __future__ import annotations

import pytest

from trioswap.discovery.ollama_host import ollama_endpoint


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "http://127.0.0.1:11434"),
        ("example.com", "http://example.com:11434"),
        ("example.com:5000", "http://example.com:5000"),
        (":5000", "http://127.0.0.1:5000"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:11435", "http://127.0.0.1:11435"),
        ("10.0.0.7", "http://10.0.0.7:11434"),
        ("[::1]:11434", "http://[::1]:11434"),
        ("::1", "http://[::1]:11434"),
        ("[::]", "http://[::1]:11434"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("HTTPS://example.com:8443/", "https://example.com:8443"),
        ("http://example.com:8080/ollama/", "http://example.com:8080/ollama"),
        ("  gpu-box:11434  ", "http://gpu-box:11434"),
    ],
)
def test_forms(value: str, expected: str) -> None:
    assert ollama_endpoint(value) == expected


@pytest.mark.parametrize(
    "value", ["ftp://example.com", "example.com:http", "example.com:70000", "[zz::1]:1"]
)
def test_refused(value: str) -> None:
    with pytest.raises(ValueError):
        ollama_endpoint(value)
