"""The continuous-batching loop: admit waiting requests into prefill, decode the running ones.

Each `step()` runs one forward: a prefill (extend) batch when requests wait and fit, otherwise
one decode step of every running request. Finished requests leave and new ones join between
steps. Admission is optimistic about how many tokens running requests will still generate; when
a decode step finds no free slot, the prefix cache is evicted first, then the newest running
request is retracted to the waiting queue (its KV left in the cache) and resumed later.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time

import torch

from radix import shared_prefix_groups
from runtime.constrained.base import (
    GrammarCache,
    allocate_bitmask,
    allowed_mask,
    create_grammar_backend,
)
from runtime.forward_batch import ForwardBatch, ForwardMode
from runtime.model_runner import ModelRunner
from runtime.sampling.sampler import Sampler, SampleRow
from runtime.scheduler.prefix_cache import NoPrefixCache, PrefixCache, RadixPrefixCache
from runtime.scheduler.req import FinishReason, GenerateInput, Req, ReqOutput
from runtime.scheduler.schedule_policy import SchedulePolicy

logger = logging.getLogger(__name__)

# Share of a running request's remaining max_new_tokens that admission keeps free for it.
INIT_NEW_TOKEN_RATIO, MIN_NEW_TOKEN_RATIO, NEW_TOKEN_RATIO_DECAY = 0.7, 0.1, 0.002
RETRACT_RATIO_STEP = 0.2
# A waiting request that shares this many more tokens with one admitted in the same batch than
# the cache holds waits a step and reuses that one's KV instead of computing the prefix twice.
IN_BATCH_SHARE_MIN = 32
LOG_EVERY_STEPS = 50
# Decoding requests under a shared radix prefix at least this long attend to it together.
CASCADE_MIN_PREFIX = 16
# Jump-forward: rounds of forced text per step, and the most forced tokens taken at once (the
# grammar matchers roll back at most 32 tokens).
JUMP_FORWARD_MAX_ROUNDS = 8
JUMP_FORWARD_MAX_TOKENS = 24


def accept_all(grammar, ids: list[int]) -> bool:
    """Advances the grammar past all of `ids`, or past none of them (False)."""
    n = 0
    while n < len(ids) and grammar.accept_token(ids[n]):
        n += 1
    if n < len(ids):
        grammar.rollback(n)
        return False
    return True


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


class Scheduler:
    def __init__(self, runner: ModelRunner, tokenizer, eos_ids: set[int]) -> None:
        self.runner = runner
        self.args = args = runner.args
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.req_to_token_pool = runner.req_to_token_pool
        self.kv_pool = runner.kv_pool
        self.cache: PrefixCache = (
            NoPrefixCache(self.req_to_token_pool, self.kv_pool)
            if args.disable_radix_cache
            else RadixPrefixCache(self.req_to_token_pool, self.kv_pool, args.page_size)
        )
        self.policy = SchedulePolicy(args.schedule_policy, self.cache, args.random_seed)
        self.sampler = Sampler(runner.config.vocab_size)
        self.waiting: list[Req] = []
        self.running: list[Req] = []  # prompt done, decoding
        self.chunked: Req | None = None  # prompt partly prefilled
        self.new_token_ratio = INIT_NEW_TOKEN_RATIO
        backend = create_grammar_backend(args.grammar_backend, tokenizer, runner.config.vocab_size)
        self.grammars = GrammarCache(backend) if backend is not None else None
        self.grammar_waiting: list[tuple[Req, concurrent.futures.Future]] = []
        # Jump-forward re-queues the request to extend the forced tokens: without a prefix
        # cache that would recompute its whole sequence, so it is off then.
        self.jump_forward = not (args.disable_jump_forward or args.disable_radix_cache)
        self.errors: list[tuple[str, Exception]] = []  # requests that failed between steps
        self.stats = {
            "prefill_tokens": 0,
            "decode_tokens": 0,
            "cascade_decode_tokens": 0,  # decoded while attending to a shared prefix as a group
            "steps": 0,
            "prompt_tokens": 0,
            "cached_prompt_tokens": 0,
            "retractions": 0,
            "jump_forward_tokens": 0,
        }
        torch.manual_seed(args.random_seed)

    # ---- requests in and out ----

    def add_request(self, inp: GenerateInput) -> None:
        need = len(inp.input_ids) + inp.params.max_new_tokens
        if need > self.kv_pool.size:
            raise ValueError(
                f"sampling_params.max_new_tokens: prompt + max_new_tokens ({need} tokens) exceeds "
                f"the KV pool ({self.kv_pool.size} tokens, see max_total_tokens)"
            )
        req = Req(inp, self.tokenizer, self.eos_ids)
        constraint = inp.params.constraint
        if constraint is None:
            self.waiting.append(req)
            return
        kind, spec = constraint
        if self.grammars is None:
            raise ValueError(
                f"sampling_params.{kind}: constrained decoding is off (--grammar-backend none)"
            )
        future = self.grammars.get(kind, spec)
        if future.done():  # compiled before: a bad spec fails here, before any output
            self._start_constrained(req, future)
        else:
            self.grammar_waiting.append((req, future))

    def _start_constrained(self, req: Req, future: concurrent.futures.Future) -> None:
        try:
            req.grammar = self.grammars.backend.matcher(future.result())
        except ValueError as e:
            raise ValueError(f"sampling_params.{e}") from None
        self.waiting.append(req)

    def _poll_grammars(self) -> None:
        """Queues the requests whose grammar is ready; fails those whose spec did not compile."""
        if not (self.waiting or self.running or self.chunked):
            # Nothing else to run: wait a little for a compilation instead of spinning.
            concurrent.futures.wait(
                [f for _, f in self.grammar_waiting],
                timeout=0.05,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
        still = []
        for req, future in self.grammar_waiting:
            if not future.done():
                still.append((req, future))
                continue
            try:
                self._start_constrained(req, future)
            except ValueError as e:
                self.errors.append((req.rid, e))
        self.grammar_waiting = still

    def abort_request(self, rid: str) -> list[ReqOutput]:
        """Drops the request wherever it is and releases what it holds."""
        for i, (req, _) in enumerate(self.grammar_waiting):
            if req.rid == rid:
                del self.grammar_waiting[i]
                req.finished = FinishReason("abort")
                return [self._output(req, [])]
        for req in [*self.waiting, *self.active_reqs()]:
            if req.rid == rid:
                req.finished = FinishReason("abort")
                self._release(req)
                return [self._output(req, [])]
        return []

    def all_rids(self) -> list[str]:
        reqs = [r for r, _ in self.grammar_waiting] + self.waiting + self.active_reqs()
        return [r.rid for r in reqs]

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.chunked or self.grammar_waiting)

    def active_reqs(self) -> list[Req]:
        return [*self.running, *([self.chunked] if self.chunked else [])]

    def flush_cache(self) -> bool:
        """Empties the prefix cache; refused (False) while requests are queued or running."""
        if self.has_work():
            return False
        self.cache.reset()
        return True

    # ---- one iteration ----

    def step(self) -> list[ReqOutput]:
        if self.grammar_waiting:
            self._poll_grammars()
        if not (self.waiting or self.running or self.chunked):
            return []
        self.stats["steps"] += 1
        batch = self._admit_prefill()
        if batch:
            run, mode = self._run_extend, "prefill"
        else:
            self._ensure_decode_room()
            batch, run, mode = list(self.running), self._run_decode, "decode"
            self.new_token_ratio = max(
                MIN_NEW_TOKEN_RATIO, self.new_token_ratio - NEW_TOKEN_RATIO_DECAY
            )
        if not batch:
            return []
        t0 = time.perf_counter()
        try:
            outputs = run(batch)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s: %d request(s), %d token(s), %.3fs",
                    mode,
                    len(batch),
                    sum(r.extend_len for r in batch) if mode == "prefill" else len(batch),
                    time.perf_counter() - t0,
                )
        except Exception as e:  # a failed forward must not take the other requests down
            logger.exception("%s step failed; aborting its %d request(s)", mode, len(batch))
            outputs = []
            for req in batch:
                req.finished = FinishReason("abort", message=f"{type(e).__name__}: {e}")
                self._release(req)
                outputs.append(self._output(req, []))
        if self.args.debug_check_memory:
            self.check_memory()
        if self.stats["steps"] % LOG_EVERY_STEPS == 0:
            s = self.load_stats()
            logger.info(
                "running %d, waiting %d, token usage %.1f%%, cache hit rate %.1f%%, retracted %d",
                s["num_running_reqs"],
                s["num_waiting_reqs"],
                100 * s["token_usage"],
                100 * s["cache_hit_rate"],
                self.stats["retractions"],
            )
        return outputs

    def load_stats(self) -> dict:
        used = self.kv_pool.size - self.kv_pool.available_size() - self.cache.evictable_size()
        prompt = self.stats["prompt_tokens"]
        return {
            **self.stats,
            "num_waiting_reqs": len(self.waiting),
            "num_running_reqs": len(self.active_reqs()),
            "kv_free_tokens": self.kv_pool.available_size(),
            "cache_tokens": self.cache.total_size(),
            "token_usage": used / self.kv_pool.size,
            "cache_hit_rate": self.stats["cached_prompt_tokens"] / prompt if prompt else 0.0,
        }

    # ---- memory ----

    def _reserve(self, req: Req) -> int:
        """Slots a request may still take: the rest of its prompt and a share of its output."""
        return max(0, req.fill_len - req.kv_len) + self._reserve_output(req)

    def _alloc_kv(self, n: int) -> torch.Tensor:
        short = n - self.kv_pool.available_size()
        if short > 0:
            self.cache.evict(short)
        slots = self.kv_pool.alloc(n)
        if slots is None:
            raise RuntimeError(f"out of KV slots: need {n}, {self.kv_pool.available_size()} free")
        return slots

    def _ensure_decode_room(self) -> None:
        """Makes one slot per running request free: evict cached prefixes, else retract."""
        while self.running:
            short = len(self.running) - self.kv_pool.available_size()
            if short <= 0 or self.cache.evict(short) >= short:
                return
            self._retract(self.running[-1])

    def _retract(self, req: Req) -> None:
        self._release(req)
        self.waiting.insert(0, req)
        self.new_token_ratio = min(1.0, self.new_token_ratio + RETRACT_RATIO_STEP)
        self.stats["retractions"] += 1
        logger.info(
            "KV pool full: retracted request %s after %d tokens; it resumes later",
            req.rid,
            len(req.output_ids),
        )

    # ---- prefill ----

    def _admit_prefill(self) -> list[Req]:
        """Picks requests for one extend batch under the token, request and memory budgets."""
        budget = self.args.max_prefill_tokens
        chunk = self.args.chunked_prefill_size if self.args.chunked_prefill_size > 0 else 1 << 60
        batch: list[Req] = []
        if self.chunked is not None:
            req = self.chunked
            req.extend_len = min(req.fill_len - req.kv_len, budget, chunk)
            if req.extend_len > self.kv_pool.available_size() + self.cache.evictable_size():
                return []  # decoding requests outgrew the room; decode (and retract) first
            self.chunked = None
            budget -= req.extend_len
            batch.append(req)
            if req.kv_len + req.extend_len < req.fill_len:
                self.chunked = req
                return batch
        running = len(self.running) + len(batch)
        if not self.waiting or running >= self.args.max_running_requests:
            return batch  # nobody could be admitted: skip ordering (and matching) the queue
        if self.req_to_token_pool.available_size() == 0:
            return batch
        room = self.kv_pool.available_size() + self.cache.evictable_size()
        room -= sum(self._reserve(r) for r in self.running + batch)
        for req in self.policy.order(self.waiting):
            if budget <= 0 or running >= self.args.max_running_requests:
                break
            if self.req_to_token_pool.available_size() == 0:
                break
            indices, handle = self.cache.match_prefix(req.match_ids())
            if any(
                common_prefix_len(req.fill_ids, b.fill_ids) - len(indices) >= IN_BATCH_SHARE_MIN
                for b in batch
            ):
                continue  # computed by a request in this batch; reuse it next step
            before = self.cache.evictable_size()
            self.cache.inc_lock_ref(handle)
            locked = before - self.cache.evictable_size()
            cost = req.fill_len - len(indices) + self._reserve_output(req)
            if cost > room - locked:
                self.cache.dec_lock_ref(handle)
                break
            room -= locked + cost
            self._admit(req, indices, handle)
            running += 1
            req.extend_len = min(req.fill_len - req.kv_len, budget, chunk)
            budget -= req.extend_len
            batch.append(req)
            if req.kv_len + req.extend_len < req.fill_len:
                self.chunked = req  # the rest follows in later steps
                break
        return batch

    def _reserve_output(self, req: Req) -> int:
        """The share of its remaining max_new_tokens that admission keeps free for a request."""
        return int((req.params.max_new_tokens - len(req.output_ids)) * self.new_token_ratio)

    def _admit(self, req: Req, indices: torch.Tensor, handle) -> None:
        self.waiting.remove(req)
        req.req_pool_idx = self.req_to_token_pool.alloc()
        table = self.req_to_token_pool.req_to_token
        table[req.req_pool_idx, : len(indices)] = indices.to(table.device)
        req.kv_len = req.cache_owned_len = len(indices)
        req.prefix_handle = handle
        if not req.output_ids:  # a resumed request was counted when it first came in
            req.cached_tokens = len(indices)
            self.stats["prompt_tokens"] += len(req.input_ids)
            self.stats["cached_prompt_tokens"] += len(indices)

    def _run_extend(self, batch: list[Req]) -> list[ReqOutput]:
        table = self.req_to_token_pool.req_to_token
        ids, positions, locs, prefix_lens, ext_lens, seq_lens, pool_idx = [], [], [], [], [], [], []
        logit_rows: list[int] = []
        plans = []  # per request: (first logprob row, logprob positions, sample row or None)
        row = 0
        for req in batch:
            start, ext, fill = req.kv_len, req.extend_len, req.fill_ids
            slots = self._alloc_kv(ext)
            table[req.req_pool_idx, start : start + ext] = slots.to(table.device)
            ids.extend(fill[start : start + ext])
            positions.extend(range(start, start + ext))
            locs.append(slots)
            prefix_lens.append(start)
            ext_lens.append(ext)
            seq_lens.append(start + ext)
            pool_idx.append(req.req_pool_idx)
            # Input logprob of token j comes from the logits at position j - 1.
            lp_pos = range(0)
            if req.return_logprob and not req.sent_input_logprobs:
                lp_lo = max(req.logprob_start_len, 1) - 1
                lp_pos = range(max(lp_lo, start), min(len(req.input_ids) - 1, start + ext))
            lp_first = len(logit_rows)
            logit_rows.extend(row + p - start for p in lp_pos)
            sample_row = None
            if start + ext == len(fill) and req.params.max_new_tokens > len(req.output_ids):
                sample_row = len(logit_rows)
                logit_rows.append(row + ext - 1)
            plans.append((lp_first, lp_pos, sample_row))
            row += ext
        fb = self._forward_batch(
            ForwardMode.EXTEND, ids, positions, torch.cat(locs), pool_idx, seq_lens
        )
        fb.prefix_lens_cpu, fb.extend_lens_cpu = prefix_lens, ext_lens
        logits = self.runner.forward(
            fb, torch.tensor(logit_rows, dtype=torch.int64, device=self.runner.device)
        )
        self.stats["prefill_tokens"] += len(ids)

        sampling: list[tuple[Req, int]] = []
        outputs = []
        for req, (lp_first, lp_pos, sample_row) in zip(batch, plans):
            req.kv_len += req.extend_len
            if len(lp_pos):
                self._record_input_logprobs(req, logits[lp_first : lp_first + len(lp_pos)], lp_pos)
            self.cache.cache_unfinished_req(req)  # later requests may share it from now on
            if not req.prefill_done:
                continue
            if sample_row is None:  # max_new_tokens == 0: prefill only
                req.finished = FinishReason("length", length=len(req.output_ids))
                self._release(req)
                outputs.append(self._output(req, []))
            else:
                sampling.append((req, sample_row))
                self.running.append(req)
        if sampling:
            rows = torch.tensor([r for _, r in sampling], dtype=torch.int64, device=logits.device)
            outputs += self._sample_and_advance([q for q, _ in sampling], logits[rows])
        return outputs

    # ---- decode ----

    def _run_decode(self, batch: list[Req]) -> list[ReqOutput]:
        table = self.req_to_token_pool.req_to_token
        slots = self._alloc_kv(len(batch))
        pool_idx = [r.req_pool_idx for r in batch]
        kv_lens = [r.kv_len for r in batch]
        dev = self.runner.device
        table[torch.tensor(pool_idx, device=dev), torch.tensor(kv_lens, device=dev)] = slots.to(dev)
        ids = [r.output_ids[-1] for r in batch]
        fb = self._forward_batch(
            ForwardMode.DECODE, ids, kv_lens, slots, pool_idx, [n + 1 for n in kv_lens]
        )
        if len(batch) > 1:
            fb.prefix_groups = shared_prefix_groups(
                [r.prefix_handle for r in batch], CASCADE_MIN_PREFIX
            )
            self.stats["cascade_decode_tokens"] += sum(len(rows) for rows, _ in fb.prefix_groups)
        logits = self.runner.forward(fb, torch.arange(len(batch), device=dev))
        for r in batch:
            r.kv_len += 1
        self.stats["decode_tokens"] += len(batch)
        return self._sample_and_advance(batch, logits)

    def _forward_batch(self, mode, ids, positions, locs, pool_idx, seq_lens) -> ForwardBatch:
        dev = self.runner.device
        return ForwardBatch(
            mode=mode,
            input_ids=torch.tensor(ids, dtype=torch.int64, device=dev),
            positions=torch.tensor(positions, dtype=torch.int64, device=dev),
            out_cache_loc=locs.to(dev),
            req_pool_indices=torch.tensor(pool_idx, dtype=torch.int64, device=dev),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int64, device=dev),
            req_to_token_pool=self.req_to_token_pool,
            kv_pool=self.kv_pool,
            seq_lens_cpu=seq_lens,
        )

    def _grammar_mask(self, reqs: list[Req]) -> torch.Tensor | None:
        """[batch, vocab] bool of what each request's grammar allows (all for the others)."""
        constrained = [i for i, r in enumerate(reqs) if r.grammar is not None]
        if not constrained:
            return None
        vocab = self.runner.config.vocab_size
        bitmask = allocate_bitmask(len(constrained), vocab)
        for row, i in enumerate(constrained):
            reqs[i].grammar.fill_bitmask(bitmask, row)
        allowed = torch.ones(len(reqs), vocab, dtype=torch.bool)
        allowed[constrained] = allowed_mask(bitmask, vocab)
        return allowed

    def _sample_and_advance(self, reqs: list[Req], logits: torch.Tensor) -> list[ReqOutput]:
        rows = [
            SampleRow(r.params, r.input_ids, r.output_ids, r.generator, r.banned_ids())
            for r in reqs
        ]
        want = any(r.return_logprob for r in reqs)
        res = self.sampler.sample(
            logits, rows, [r.top_logprobs_num for r in reqs], want, self._grammar_mask(reqs)
        )
        outputs = []
        for i, (req, tok) in enumerate(zip(reqs, res.token_ids)):
            req.append_token(tok)
            new_ids = [tok]
            if req.grammar is not None and not req.finished and self._can_jump(req):
                new_ids = self._jump_forward(req) or new_ids
            out = self._output(req, new_ids)
            if req.return_logprob:
                out.output_token_logprobs = [(res.logprobs[i], tok)]
                if req.top_logprobs_num:
                    out.output_top_logprobs = [res.top_logprobs[i]]
            outputs.append(out)
            if req.finished:
                self._release(req)
            elif len(new_ids) > 1:  # forced tokens to extend: back to the queue, KV cached
                self._release(req)
                self.waiting.insert(0, req)
        return outputs

    # ---- jump-forward ----

    def _can_jump(self, req: Req) -> bool:
        # Forced tokens have no logprobs and would bypass the incremental stop-string check.
        return self.jump_forward and not req.return_logprob and not req.params.stop

    def _jump_forward(self, req: Req) -> list[int] | None:
        """Appends the text the grammar forces after the token just sampled, re-tokenized
        together with that token (so the boundary is tokenized as the model would), and
        returns the tokens that replace it; None when nothing is forced."""
        grammar, last = req.grammar, req.output_ids[-1]
        forced = ""
        accepted: list[int] = []
        for _ in range(JUMP_FORWARD_MAX_ROUNDS):  # a backend may see only part of it at once
            piece = grammar.jump_forward_string()
            if not piece:
                break
            ids = self.tokenizer.encode(piece, add_special_tokens=False)
            if len(accepted) + len(ids) > JUMP_FORWARD_MAX_TOKENS or not accept_all(grammar, ids):
                break
            forced += piece
            accepted += ids
        if not accepted:
            return None
        grammar.rollback(len(accepted) + 1)  # back to before the sampled token
        text = self.tokenizer.decode([last]) + forced
        new_ids = self.tokenizer.encode(text, add_special_tokens=False)
        if "\ufffd" in text or self.tokenizer.decode(new_ids) != text:
            new_ids = [last] + accepted  # a token ending mid-character: keep the boundary
        room = req.params.max_new_tokens - (len(req.output_ids) - 1)
        new_ids = new_ids[:room]
        if not new_ids or not accept_all(grammar, new_ids):  # re-tokenized, it does not fit
            grammar.accept_token(last)
            return None
        req.output_ids[-1:] = new_ids
        self.stats["jump_forward_tokens"] += len(new_ids) - 1
        if grammar.is_terminated():
            req.finished = FinishReason("stop", matched=new_ids[-1])
        elif len(req.output_ids) >= req.params.max_new_tokens:
            req.finished = FinishReason("length", length=req.params.max_new_tokens)
        return new_ids if len(new_ids) > 1 or new_ids[0] != last else None

    def _record_input_logprobs(self, req: Req, logits: torch.Tensor, positions: range) -> None:
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = torch.tensor([req.input_ids[p + 1] for p in positions], device=logits.device)
        chosen = logprobs.gather(1, targets[:, None]).squeeze(1).tolist()
        req.input_token_logprobs += list(zip(chosen, targets.tolist()))
        if req.top_logprobs_num:
            vals, idx = logprobs.topk(req.top_logprobs_num, dim=-1)
            req.input_top_logprobs += [list(zip(v, i)) for v, i in zip(vals.tolist(), idx.tolist())]

    def _release(self, req: Req) -> None:
        """Hands the request's KV to the cache and frees its request slot; it stops running."""
        if req in self.waiting:
            self.waiting.remove(req)
        if req in self.running:
            self.running.remove(req)
        if self.chunked is req:
            self.chunked = None
        if req.req_pool_idx is not None:
            self.cache.cache_finished_req(req)
            self.req_to_token_pool.free(req.req_pool_idx)
            req.req_pool_idx = None
            req.kv_len = req.cache_owned_len = 0

    def _output(self, req: Req, new_ids: list[int]) -> ReqOutput:
        out = ReqOutput(
            rid=req.rid,
            new_token_ids=new_ids,
            prompt_tokens=len(req.input_ids),
            completion_tokens=len(req.output_ids),
            cached_tokens=req.cached_tokens,
            finish_reason=req.finished,
        )
        prompt_seen = req.kv_len >= len(req.input_ids) or req.finished
        if req.return_logprob and not req.sent_input_logprobs and prompt_seen:
            first = [(None, req.input_ids[0])] if req.logprob_start_len == 0 else []
            out.input_token_logprobs = first + req.input_token_logprobs
            if req.top_logprobs_num:
                out.input_top_logprobs = ([None] if first else []) + req.input_top_logprobs
            req.sent_input_logprobs = True
        return out

    # ---- accounting ----

    def check_memory(self) -> None:
        """Every KV slot is free, held by the cache, or held by an active request."""
        active = self.active_reqs()
        held = sum(r.kv_len - r.cache_owned_len for r in active)
        free = self.kv_pool.available_size()
        total = free + self.cache.total_size() + held
        assert total == self.kv_pool.size, (
            f"KV accounting broken: free {free} + cache {self.cache.total_size()} + running {held} "
            f"!= {self.kv_pool.size}"
        )
        assert len(self.kv_pool.free_slot_set()) == free, "a KV slot is on the free list twice"
        assert (
            self.req_to_token_pool.available_size() + len(active) == self.req_to_token_pool.size
        ), "request-slot accounting broken"
