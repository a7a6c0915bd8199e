"""The async client of Ollama's HTTP API (see ../shared/OLLAMA_API.md): no Qt, no torch."""
