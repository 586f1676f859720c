"""Structured generation: grammars that constrain decoding to a regex, a JSON schema or EBNF."""
