"""trioswap: a model-swapping proxy for local LLM servers."""

__version__ = "0.1.0"
