from __future__ import annotations

from runtime.detokenizer import IncrementalDecoder, find_stop, stop_holdback


def test_incremental_equals_full_decode(engine):
    tok = engine.tokenizer
    text = "Héllo wörld! 你好，世界 🙂 code: `x = [1, 2]`\n\nDone."
    ids = tok.encode(text)
    dec = IncrementalDecoder(tok)
    pieces = [dec.push([t]) for t in ids]
    rest = dec.flush()
    assert "".join(pieces) + rest == dec.text
    assert dec.text == tok.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in p for p in pieces)


def test_find_stop_and_holdback():
    assert find_stop("abc END x STOP", ["STOP", "END"]) == (4, "END")
    assert find_stop("abc", ["x"]) is None
    assert stop_holdback("hello EN", ["END"]) == 2
    assert stop_holdback("hello", ["END"]) == 0
