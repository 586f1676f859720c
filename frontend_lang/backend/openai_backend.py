"""Any server with the OpenAI completions API (ours included), for programs without roles'
chat templates: text, `gen` and `select`. `select` needs the prompt's logprobs (`echo` with
`logprobs`); a server that does not give them gets a clear error."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from frontend_lang.backend.base import Backend, BackendError
from frontend_lang.choices import METHODS

# our sampling params and the OpenAI field that carries each
RENAMED = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}


class OpenAI(Backend):
    chat_template = None  # roles use a plain "USER: ..." format over this API

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        timeout: float = 600,
    ) -> None:
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def _body(self, text: str, params: dict) -> dict:
        body = {"model": self.model, "prompt": text}
        for k, v in params.items():
            body[RENAMED.get(k, k)] = v
        return body

    def _post(self, call: str, body: dict) -> dict:
        try:
            r = self.http.post("/completions", json=body)
        except httpx.HTTPError as e:
            raise BackendError(call, 0, f"{type(e).__name__}: {e}") from None
        if r.status_code != 200:
            try:
                msg = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = r.text
            raise BackendError(call, r.status_code, msg)
        return r.json()

    @staticmethod
    def _result(choice: dict, usage: dict | None) -> dict:
        meta = {"finish_reason": choice.get("finish_reason")}
        if usage:
            meta.update(
                prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"]
            )
        return {"text": choice["text"], "meta_info": meta}

    def generate(self, text: str, sampling_params: dict, **kwargs) -> dict:
        _no_tools(kwargs)
        out = self._post("generate", self._body(text, sampling_params))
        return self._result(out["choices"][0], out.get("usage"))

    def generate_stream(self, text: str, sampling_params: dict, **kwargs) -> Iterator[dict]:
        _no_tools(kwargs)
        body = {**self._body(text, sampling_params), "stream": True}
        acc = ""
        with self.http.stream("POST", "/completions", json=body) as r:
            if r.status_code != 200:
                r.read()
                raise BackendError("generate", r.status_code, r.text)
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    raise BackendError("generate", 500, chunk["error"].get("message", ""))
                for c in chunk.get("choices", []):
                    acc += c.get("text", "")
                    yield {"text": acc, "meta_info": {"finish_reason": c.get("finish_reason")}}

    def cache_prefix(self, text: str) -> int:
        # One token: OpenAI-compatible servers (vLLM among them) refuse max_tokens 0 without echo.
        out = self._post("cache_prefix", self._body(text, {"max_new_tokens": 1}))
        return out.get("usage", {}).get("prompt_tokens", 0)

    def _prompt_logprobs(self, texts: list[str]) -> list[list]:
        """Entries `[logprob, None, token text]` for every token of each text."""
        body = {"model": self.model, "prompt": texts, "max_tokens": 0, "echo": True, "logprobs": 1}
        try:
            out = self._post("select", body)
        except BackendError as e:
            raise BackendError(
                "select",
                e.status,
                f"the server gives no prompt logprobs (echo + logprobs): {e.message}",
            ) from None
        rows = []
        for c in sorted(out["choices"], key=lambda c: c["index"]):
            lp = c.get("logprobs") or {}
            rows.append(
                [[v, None, t] for v, t in zip(lp.get("token_logprobs", []), lp.get("tokens", []))]
            )
        return rows

    def select(self, text: str, choices: list[str], method: str = "token_length_normalized"):
        if method not in METHODS:
            raise ValueError(f"choices_method: must be one of {sorted(METHODS)}, got {method!r}")
        if method == "unconditional_likelihood_normalized":
            raise ValueError(
                "choices_method: unconditional_likelihood_normalized needs RuntimeEndpoint"
            )
        prefix_len = len(self._prompt_logprobs([text])[0])
        rows = self._prompt_logprobs([text + c for c in choices])
        entries = [row[max(prefix_len - 2, 0) :] for row in rows]
        scores = METHODS[method](entries)
        return scores.decision, scores.meta_info()


def _no_tools(kwargs: dict) -> None:
    if kwargs.get("tools") is not None:
        raise ValueError("tools: gen(tools=...) needs a native backend (RuntimeEndpoint, Runtime)")
