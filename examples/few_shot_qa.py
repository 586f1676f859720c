"""Few-shot question answering with `select`: the answer is picked among choices by the
model's logprobs, in one request that shares the few-shot prefix."""

from _backend import backend_from_args

import frontend_lang as sgl

EXAMPLES = (
    "Q: What is the capital of Japan?\nA: Tokyo\n"
    "Q: What is the capital of Italy?\nA: Rome\n"
    "Q: What is the capital of Spain?\nA: Madrid\n"
)


@sgl.function
def qa(s, question, choices):
    s += EXAMPLES + f"Q: {question}\nA:"
    s += sgl.select("answer", choices=choices)


if __name__ == "__main__":
    sgl.set_default_backend(backend_from_args(__doc__))
    for question, choices in [
        ("What is the capital of France?", [" Paris", " London", " Berlin"]),
        ("What is the capital of Germany?", [" Vienna", " Berlin", " Madrid"]),
    ]:
        state = qa.run(question=question, choices=choices)
        print(f"{question} ->{state['answer']}")
    sgl.get_default_backend().shutdown()
