"""A small tree of thought: fork the state into branches that propose ideas in parallel,
then judge them; every branch shares the question's prefix in the cache."""

from _backend import backend_from_args

import frontend_lang as sgl


@sgl.function
def tree(s, question, branches=3):
    s += f"Question: {question}\n"
    forks = s.fork(branches)
    for i, f in enumerate(forks):
        f += f"Idea {i + 1}:"
        f += sgl.gen("idea", max_tokens=24, stop="\n", temperature=0.8, top_p=0.95)
    forks.join()
    for i, idea in enumerate(s["idea"]):
        s += f"Idea {i + 1}:{idea}\n"
    s += "The best idea is number"
    s += sgl.select("best", choices=[f" {i + 1}" for i in range(branches)])


if __name__ == "__main__":
    backend = backend_from_args(__doc__)
    state = tree.run(question="How can a small town reduce traffic?", backend=backend)
    print(state.text())
    backend.shutdown()
