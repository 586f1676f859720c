import pytest

from runtime.parsers.reasoning_parser import (
    REASONING_PARSERS,
    ReasoningSplitter,
    reasoning_format,
    split_reasoning,
)

R1, QWEN3 = REASONING_PARSERS["deepseek-r1"], REASONING_PARSERS["qwen3"]


def test_whole_outputs():
    assert split_reasoning(QWEN3, "<think>a plan</think>\n\nThe answer.") == (
        "a plan",
        "The answer.",
    )
    assert split_reasoning(QWEN3, "No thinking here.") == (None, "No thinking here.")
    # R1's prompt opens the block: its output starts inside it
    assert split_reasoning(R1, "a plan</think>The answer.") == ("a plan", "The answer.")
    assert split_reasoning(R1, "<think>a plan</think>The answer.") == ("a plan", "The answer.")
    assert split_reasoning(R1, "cut short while thinking") == ("cut short while thinking", "")
    assert split_reasoning(QWEN3, "<think>cut short") == ("cut short", "")


def _streamed(fmt, text: str, size: int) -> tuple[str, str]:
    s = ReasoningSplitter(fmt)
    reasoning = content = ""
    for i in range(0, len(text), size):
        r, c = s.feed(text[i : i + size])
        reasoning, content = reasoning + r, content + c
    r, c = s.finish()
    return reasoning + r, content + c


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
@pytest.mark.parametrize("fmt", [R1, QWEN3])
def test_chunk_boundaries_inside_tags_change_nothing(fmt, size):
    text = "<think>weigh < and </ and </thin</think>Answer: 4 </think"
    assert _streamed(fmt, text, size) == ("weigh < and </ and </thin", "Answer: 4 </think")


def test_streaming_holds_back_only_what_may_be_a_tag():
    s = ReasoningSplitter(QWEN3)
    assert s.feed("<thi") == ("", "")
    assert s.feed("nk>plan</th") == ("plan", "")
    assert s.feed("ink>done") == ("", "done")
    s = ReasoningSplitter(QWEN3)
    assert s.feed("Hello") == ("", "Hello")  # no think block: content at once


def test_unknown_parser_is_named():
    with pytest.raises(ValueError, match="^reasoning_parser: must be one of"):
        reasoning_format("o1")
