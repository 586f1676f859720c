"""The HTTP server: SGLang's native protocol, the OpenAI protocol, metrics."""
