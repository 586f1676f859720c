"""A multi-turn chat with roles; each turn reuses the previous ones from the radix cache."""

from _backend import backend_from_args

import frontend_lang as sgl


@sgl.function
def chat(s, questions):
    s += sgl.system("You are a helpful assistant. Answer in one sentence.")
    for i, q in enumerate(questions):
        s += sgl.user(q)
        s += sgl.assistant(sgl.gen(f"answer_{i}", max_tokens=48, temperature=0))


if __name__ == "__main__":
    backend = backend_from_args(__doc__)
    questions = ["What is the capital of France?", "And what river flows through it?"]
    state = chat.run(questions=questions, backend=backend)
    for i, q in enumerate(questions):
        print(f"USER: {q}\nASSISTANT: {state[f'answer_{i}'].strip()}")
        print(f"  (cached prompt tokens: {state.get_meta_info(f'answer_{i}')['cached_tokens']})")
    backend.shutdown()
