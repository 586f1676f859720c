"""A server that speaks SGLang's native protocol (ours, or SGLang's own), over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from frontend_lang.backend.base import Backend, BackendError
from frontend_lang.chat_template import ChatTemplate
from frontend_lang.choices import METHODS


class RuntimeEndpoint(Backend):
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.model_info = self._call("get_model_info", "GET", "/get_model_info")
        self.chat_template = None
        if self.model_info.get("chat_template"):  # a server that shares its template
            self.chat_template = ChatTemplate.from_jinja(
                self.model_info["chat_template"],
                self.model_info.get("bos_token") or "",
                self.model_info.get("eos_token") or "",
            )

    def _call(self, call: str, method: str, path: str, body: dict | None = None):
        try:
            r = self.http.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise BackendError(call, 0, f"{type(e).__name__}: {e}") from None
        if r.status_code != 200:
            raise BackendError(call, r.status_code, _error_message(r))
        return (
            r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        )

    def get_server_info(self) -> dict:
        return self._call("get_server_info", "GET", "/get_server_info")

    def flush_cache(self) -> bool:
        try:
            self._call("flush_cache", "POST", "/flush_cache")
        except BackendError as e:
            if e.status == 400:
                return False
            raise
        return True

    def generate(self, text, sampling_params: dict, **kwargs) -> dict | list[dict]:
        return self._call("generate", "POST", "/generate", _body(text, sampling_params, kwargs))

    def generate_stream(self, text, sampling_params: dict, **kwargs) -> Iterator[dict]:
        body = {**_body(text, sampling_params, kwargs), "stream": True}
        with self.http.stream("POST", "/generate", json=body) as r:
            if r.status_code != 200:
                r.read()
                raise BackendError("generate", r.status_code, _error_message(r))
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    raise BackendError(
                        "generate", chunk["error"].get("code", 500), chunk["error"]["message"]
                    )
                yield chunk

    def pin(
        self,
        text: str | None = None,
        messages: list[dict] | None = None,
        ttl_s: float | None = None,
        tools: list[dict] | None = None,
    ) -> dict:
        """Computes the prefix (text, or messages rendered by the server's chat template with
        its tools) and keeps it out of eviction until `unpin` or `ttl_s` seconds; returns
        {pin_id, tokens, expires_at, pinned_tokens}."""
        body = {"text": text, "messages": messages, "ttl_s": ttl_s, "tools": tools}
        return self._call(
            "pin", "POST", "/pin_prefix", {k: v for k, v in body.items() if v is not None}
        )

    def unpin(self, pin_id: str) -> None:
        self._call("unpin", "POST", "/unpin_prefix", {"pin_id": pin_id})

    def cache_prefix(self, text: str) -> int:
        out = self.generate(text, {"max_new_tokens": 0})
        return out["meta_info"]["prompt_tokens"]

    def select(self, text: str, choices: list[str], method: str = "token_length_normalized"):
        """Scores every choice after `text` in one batch that shares the cached prefix."""
        if method not in METHODS:
            raise ValueError(f"choices_method: must be one of {sorted(METHODS)}, got {method!r}")
        if not choices or not all(isinstance(c, str) for c in choices):
            raise ValueError("choices: give a non-empty list of strings")
        prefix_len = self.cache_prefix(text)
        # Two tokens of slack: appending a choice may re-tokenize the prefix's last token.
        start = max(prefix_len - 2, 0)
        outs = self.generate(
            [text + c for c in choices],
            {"max_new_tokens": 0, "temperature": 0},
            return_logprob=True,
            return_text_in_logprobs=True,
            logprob_start_len=start,
        )
        entries = [o["meta_info"]["input_token_logprobs"] for o in outs]
        unconditional = None
        if method == "unconditional_likelihood_normalized":
            ids = [
                [e[1] for e in es[max(prefix_len - start, 0) :]] or [es[-1][1]] for es in entries
            ]
            alone = self.generate(
                None, {"max_new_tokens": 0}, input_ids=ids, return_logprob=True, logprob_start_len=0
            )
            unconditional = [o["meta_info"]["input_token_logprobs"] for o in alone]
        scores = METHODS[method](entries, unconditional)
        return scores.decision, scores.meta_info()


def _body(text, sampling_params: dict, kwargs: dict) -> dict:
    body = {
        "sampling_params": sampling_params,
        **{k: v for k, v in kwargs.items() if v is not None},
    }
    if text is not None:
        body["text"] = text
    return body


def _error_message(r: httpx.Response) -> str:
    try:
        err = r.json()
        return err["error"]["message"] if isinstance(err.get("error"), dict) else str(err)
    except (ValueError, KeyError, AttributeError):
        return r.text.strip() or r.reason_phrase
