"""Chat roles as text around each message, read off the server's own Jinja chat template.

A program builds its prompt piece by piece (`s += user("...")`, then `gen` inside `assistant`),
so it needs each role's prefix and suffix rather than a whole rendered conversation. They are
found by rendering small conversations with sentinel contents and cutting around them; the text
a template puts before the first message when there is no system message (SmolLM2's default
system prompt) comes out the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
_A, _B, _C = ("@@SENTINEL-" + x + "@@" for x in "ABC")  # survives `| trim` and escaping


@dataclass
class ChatTemplate:
    prefix: dict[str, str]  # before a message of that role, inside a conversation
    suffix: dict[str, str]  # after it
    first: dict[str, str]  # before the first message of a conversation, by its role
    generation_prefix: str = ""  # what `add_generation_prompt` appends

    def role_begin(self, role: str, first: bool) -> str:
        return self.first[role] if first else self.prefix[role]

    def role_end(self, role: str) -> str:
        return self.suffix[role]

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """A whole conversation, the way a program that adds it message by message builds it."""
        text = "".join(
            self.role_begin(m["role"], i == 0) + m["content"] + self.role_end(m["role"])
            for i, m in enumerate(messages)
        )
        return text + (self.generation_prefix if add_generation_prompt else "")

    @classmethod
    def from_jinja(cls, template: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(msg):
            raise ValueError(f"chat template: {msg}")

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = raise_exception
        compiled = env.from_string(template)

        def render(*turns: tuple[str, str], gen: bool = False) -> str:
            return compiled.render(
                messages=[{"role": r, "content": c} for r, c in turns],
                add_generation_prompt=gen,
                bos_token=bos_token,
                eos_token=eos_token,
            )

        def cut(text: str, sentinel: str) -> tuple[str, str]:
            before, found, after = text.partition(sentinel)
            if not found:
                raise ValueError("chat template: a message's content does not appear as given")
            return before, after

        first, prefix, suffix = {}, {}, {}
        first["system"], suffix["system"] = cut(render(("system", _A)), _A)
        first["user"], suffix["user"] = cut(render(("user", _A)), _A)
        # inside a conversation: what comes between one message's content and the next one's
        between = cut(cut(render(("system", _A), ("user", _B)), _A)[1], _B)[0]
        prefix["user"] = between.removeprefix(suffix["system"])
        text = render(("system", _A), ("user", _B), ("assistant", _C))
        between, after = cut(cut(text, _B)[1], _C)
        prefix["assistant"], suffix["assistant"] = between.removeprefix(suffix["user"]), after
        prefix["system"] = first["system"]
        # a conversation that opens with the assistant: the opening of a user one, re-roled
        first["assistant"] = first["user"].removesuffix(prefix["user"]) + prefix["assistant"]
        lone = render(("user", _A))
        generation = render(("user", _A), gen=True).removeprefix(lone)
        return cls(prefix, suffix, first, generation)
