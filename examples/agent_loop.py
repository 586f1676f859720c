"""An agent loop that resends one long system prompt every step: the radix cache keeps it, so
each step computes only what is new."""

from _backend import backend_from_args

import frontend_lang as sgl

TOOLS = "\n".join(
    f"- tool_{i}: looks up fact number {i} in the company handbook and returns it"
    for i in range(40)
)
SYSTEM = f"You are an assistant that can call tools. The tools are:\n{TOOLS}\nReply briefly."


@sgl.function
def step(s, history, observation):
    s += sgl.system(SYSTEM)
    s += sgl.user(history + f"\nObservation: {observation}\nWhat next?")
    s += sgl.assistant(sgl.gen("action", max_tokens=24, temperature=0))


if __name__ == "__main__":
    backend = backend_from_args(__doc__)
    history = "Task: find who approves travel refunds."
    for observation in ["nothing yet", "tool_3 says: refunds go to finance", "finance confirms"]:
        state = step.run(history=history, observation=observation, backend=backend)
        meta = state.get_meta_info("action")
        print(f"{observation!r} -> {state['action'].strip()!r}")
        print(f"  prompt {meta['prompt_tokens']} tokens, {meta['cached_tokens']} from the cache")
        history += f"\nObservation: {observation}\nAction: {state['action'].strip()}"
    backend.shutdown()
