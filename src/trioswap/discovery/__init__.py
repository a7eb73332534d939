"""Model servers trioswap finds rather than starts: a running Ollama's models as `ollama/<name>`."""
