"""The continuous-batching loop: admit waiting requests into prefill, decode the running ones.

Each `step()` runs one forward: a prefill (extend) batch when requests wait and fit, otherwise
one decode step of every running request; but never two prefills in a row while requests are
decoding, so a steady stream of new prompts cannot starve them (each prefill is followed by one
token for every running request). Finished requests leave and new ones join between steps. The jobs live beside this module: admission (`prefill`), the decode batch (`decode`),
memory pressure (`memory`), outputs (`output`), grammars (`grammar_queue`, `jump_forward`).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from runtime.batch_builder import BatchBuilder
from runtime.constrained.base import batch_allowed_mask
from runtime.constrained.registry import create_grammar_backend
from runtime.io_struct import FinishReason, TokenizedGenerateRequest, TokenOutput
from runtime.kv_compression.capture import query_capture
from runtime.kv_compression.compactor import KVCompactor
from runtime.model_runner import ModelRunner
from runtime.sampling.sampler import Sampler, SampleRow
from runtime.scheduler.cache_tree import cache_tree
from runtime.scheduler.decode import cascade_groups, decode_batch
from runtime.scheduler.grammar_queue import GrammarQueue
from runtime.scheduler.jump_forward import can_jump, jump_forward
from runtime.scheduler.memory import MemoryManager
from runtime.scheduler.output import make_output, record_input_logprobs
from runtime.scheduler.pins import PinTable
from runtime.scheduler.prefill import PrefillAdder, extend_batch
from runtime.scheduler.prefix_cache import NoPrefixCache, PrefixCache, RadixPrefixCache
from runtime.scheduler.req import Req
from runtime.scheduler.schedule_policy import SchedulePolicy
from runtime.scheduler.stats import SchedulerStats

logger = logging.getLogger(__name__)

LOG_EVERY_STEPS = 50


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
        # Pins hold prefixes out of eviction; half the pool by default.
        self.pins = (
            PinTable(self.cache, args.max_pinned_tokens or self.kv_pool.size // 2)
            if isinstance(self.cache, RadixPrefixCache)
            else None
        )
        self.policy = SchedulePolicy(args.schedule_policy, self.cache, args.random_seed)
        self.memory = MemoryManager(self.cache, self.kv_pool, self.req_to_token_pool)
        self.builder = BatchBuilder(self.req_to_token_pool, self.kv_pool, runner.device)
        self.compactor = KVCompactor(args, self.memory, self.cache, self.req_to_token_pool)
        self.sampler = Sampler(runner.config.vocab_size)
        self.stats = SchedulerStats()
        self.waiting: list[Req] = []
        self.running: list[Req] = []  # prompt done, decoding
        self.chunked: Req | None = None  # prompt partly prefilled
        self.last_was_prefill = False
        backend = create_grammar_backend(args.grammar_backend, tokenizer, runner.config.vocab_size)
        self.grammars = (
            GrammarQueue(backend, args.max_json_string_length, args.grammar_compile_timeout)
            if backend is not None
            else None
        )
        # Jump-forward re-queues the request to extend the forced tokens: without a prefix
        # cache that would recompute its whole sequence, so it is off then.
        self.jump_forward = not (args.disable_jump_forward or args.disable_radix_cache)
        self.errors: list[tuple[str, Exception]] = []  # requests that failed between steps
        torch.manual_seed(args.random_seed)

    # ---- requests in and out ----

    def add_request(self, inp: TokenizedGenerateRequest) -> None:
        need = len(inp.input_ids) + inp.params.max_new_tokens
        if need > self.kv_pool.size:
            raise ValueError(
                f"sampling_params.max_new_tokens: prompt + max_new_tokens ({need} tokens) exceeds "
                f"the KV pool ({self.kv_pool.size} tokens, see max_total_tokens)"
            )
        pinned = self.pins.pinned_tokens() if self.pins is not None else 0
        if pinned and need > self.kv_pool.size - pinned:
            # it could wait forever: what it does not share with a pin may never fit
            shared = len(self.cache.match_prefix(inp.input_ids)[0])
            if need - shared > self.kv_pool.size - pinned:
                raise ValueError(
                    f"sampling_params.max_new_tokens: prompt + max_new_tokens ({need} tokens) "
                    f"exceeds the KV pool less its {pinned} pinned tokens ({self.kv_pool.size} "
                    "tokens; unpin a prefix or lower --max-pinned-tokens)"
                )
        req = Req(inp, self.tokenizer, self.eos_ids)
        req.kv_compression = self.compactor.spec_for(inp)
        if inp.params.constraint is not None:
            if self.grammars is None:
                kind = inp.params.constraint[0]
                raise ValueError(
                    f"sampling_params.{kind}: constrained decoding is off (--grammar-backend none)"
                )
            if not self.grammars.add(req):
                return  # waits for its grammar
        self.waiting.append(req)

    def abort_request(self, rid: str, message: str | None = None) -> list[TokenOutput]:
        """Drops the request wherever it is and releases what it holds."""
        req = self.grammars.remove(rid) if self.grammars is not None else None
        req = req or next((r for r in [*self.waiting, *self.active_reqs()] if r.rid == rid), None)
        return [] if req is None else [self._finish(req, FinishReason("abort", message=message))]

    def abort_all(self) -> list[TokenOutput]:
        return [out for rid in self.all_rids() for out in self.abort_request(rid)]

    def all_rids(self) -> list[str]:
        pending = [r for r, _ in self.grammars.pending] if self.grammars is not None else []
        return [r.rid for r in [*pending, *self.waiting, *self.active_reqs()]]

    def has_work(self) -> bool:
        pending = self.grammars is not None and bool(self.grammars.pending)
        return bool(self.waiting or self.running or self.chunked or pending)

    def active_reqs(self) -> list[Req]:
        return [*self.running, *([self.chunked] if self.chunked else [])]

    def flush_cache(self) -> bool:
        """Empties the prefix cache; refused (False) while requests are queued or running."""
        if self.has_work():
            return False
        if self.pins is not None and self.pins.pins:  # pinned prefixes stay
            self.cache.evict(self.cache.evictable_size())
        else:
            self.cache.reset()
        return True

    # ---- pinned prefixes and the cache's view ----

    def _pin_table(self) -> PinTable:
        if self.pins is None:
            raise ValueError("pin_prefix: the radix cache is off (--disable-radix-cache)")
        return self.pins

    def pin_prefix(self, input_ids: list[int], ttl_s: float | None = None) -> dict:
        """Pins the cached prefix of `input_ids`; see `PinTable.pin`."""
        return self._pin_table().pin(input_ids, ttl_s)

    def unpin_prefix(self, pin_id: str) -> bool:
        return self._pin_table().unpin(pin_id)

    def expire_pins(self) -> None:
        if self.pins is not None:
            self.pins.expire()

    def cache_tree(self, depth: int | None = None, min_tokens: int = 0) -> dict:
        if self.pins is None:
            raise ValueError("cache: the radix cache is off (--disable-radix-cache)")
        return cache_tree(self.cache.tree, self.pins, self.tokenizer, depth, min_tokens)

    def shutdown(self) -> None:
        if self.grammars is not None:
            self.grammars.shutdown()

    # ---- one iteration ----

    def step(self) -> list[TokenOutput]:
        if self.grammars is not None and self.grammars.pending:
            ready, errors = self.grammars.poll(idle=not (self.waiting or self.active_reqs()))
            self.waiting += ready
            self.errors += errors
        if not (self.waiting or self.running or self.chunked):
            return []
        self.stats.steps += 1
        decode_turn = self.last_was_prefill and bool(self.running)
        batch = [] if decode_turn else self._admit_prefill()
        riders = self._riders(batch) if batch else []
        # Decoding requests wait at most one prefill, unless they rode along in it.
        self.last_was_prefill = bool(batch) and not riders
        if batch:
            run, mode = self._run_prefill, "mixed" if riders else "prefill"
            batch += riders
        else:
            for req in self.memory.decode_victims(self.running):
                self.running.remove(req)
                self.waiting.insert(0, req)
                self.stats.retractions += 1
            batch, run, mode = list(self.running), self._run_decode, "decode"
            self.memory.decay_ratio()
        if not batch:
            return []
        t0 = time.perf_counter()
        try:
            outputs = run(batch)
        except Exception as e:  # a failed forward must not take the other requests down
            logger.exception("%s step failed; aborting its %d request(s)", mode, len(batch))
            why = f"{type(e).__name__}: {e}"
            outputs = [self._finish(req, FinishReason("abort", message=why)) for req in batch]
        elapsed = time.perf_counter() - t0
        self.stats.record_step(mode, elapsed)
        logger.debug("%s: %d request(s), %.3fs", mode, len(batch), elapsed)
        if self.args.debug_check_memory:
            self.check_memory()
        if self.stats.steps % LOG_EVERY_STEPS == 0:
            self._log_stats()
        return outputs

    def _admit_prefill(self) -> list[Req]:
        adder = PrefillAdder(
            self.args, self.memory, self.cache, self.req_to_token_pool, self.running
        )
        if self.chunked is not None and not adder.add_chunked(self.chunked):
            return []  # decoding requests outgrew the room; decode (and retract) first
        if self.waiting and adder.chunked is None:
            adder.add_waiting(self.policy.order(self.waiting))
        for req in adder.admitted:
            self.waiting.remove(req)
            if req.queue_time is None:
                req.queue_time = time.perf_counter() - req.arrival
            if req.kv_compression is not None:
                self.compactor.admit(req)
            if not req.output_ids:  # a resumed request was counted when it first came in
                req.cached_tokens = req.kv_len
                self.stats.prompt_tokens += len(req.input_ids)
                self.stats.cached_prompt_tokens += req.kv_len
                if req.kv_len:
                    self.cache.record_hit(req.prefix_handle)
        self.chunked = adder.chunked
        return adder.batch

    def _riders(self, batch: list[Req]) -> list[Req]:
        """The running requests that decode their next token as one-token extends in this
        prefill's forward (`--enable-mixed-chunk`): none under deterministic inference (a row's
        numbers would depend on the prompts beside it), none beside KV compression (its
        per-step hooks), none when the pool lacks a slot for each."""
        if not (self.args.enable_mixed_chunk and self.running):
            return []
        if self.args.enable_deterministic_inference or any(
            r.kv_compression is not None or r.kv_dropped for r in batch + self.running
        ):
            return []
        if sum(r.extend_len for r in batch) + len(self.running) > self.memory.room():
            return []
        for r in self.running:
            r.extend_len = 1
        return list(self.running)

    def _run_prefill(self, batch: list[Req]) -> list[TokenOutput]:
        """Prompts (or their next chunks), and running requests riding along (mixed chunk)."""
        fb, logit_rows, plans = extend_batch(batch, self.memory, self.builder)
        fb.query_capture = query_capture(batch, fb.extend_lens_cpu)
        fb.batch_invariant = self.args.enable_deterministic_inference
        riders = [r in self.running for r in batch]
        ride_rows = [i for i, rider in enumerate(riders) if rider]
        fb.prefix_groups = cascade_groups([batch[i] for i in ride_rows], ride_rows)
        self.stats.cascade_decode_tokens += sum(len(g) for g, _ in fb.prefix_groups)
        rows = torch.tensor(logit_rows, dtype=torch.int64, device=self.runner.device)
        logits = self.runner.forward(fb, rows)
        self.stats.decode_tokens += sum(riders)
        self.stats.prefill_tokens += sum(fb.extend_lens_cpu) - sum(riders)
        sampling: list[tuple[Req, int]] = []
        outputs = []
        for req, (lp_first, lp_pos, sample_row), rider in zip(batch, plans, riders):
            req.kv_len += req.extend_len
            if rider:
                sampling.append((req, sample_row))
                continue
            if len(lp_pos):
                record_input_logprobs(req, logits[lp_first : lp_first + len(lp_pos)], lp_pos)
            self.cache.cache_unfinished_req(req)  # later requests may share it from now on
            if not req.prefill_done:
                continue
            if sample_row is None:  # max_new_tokens == 0: prefill only
                outputs.append(
                    self._finish(req, FinishReason("length", length=len(req.output_ids)))
                )
            else:
                if req.kv_state is not None:  # the whole prompt is in: keep what matters
                    self.compactor.compress(req)
                sampling.append((req, sample_row))
                self.running.append(req)
        if sampling:
            rows = torch.tensor([r for _, r in sampling], dtype=torch.int64, device=logits.device)
            outputs += self._sample_and_advance([q for q, _ in sampling], logits[rows])
        return outputs

    def _run_decode(self, batch: list[Req]) -> list[TokenOutput]:
        self.compactor.before_decode(batch)
        fb = decode_batch(
            batch, self.memory, self.builder, self.args.enable_deterministic_inference
        )
        fb.query_capture = self.compactor.observer(batch)
        self.stats.cascade_decode_tokens += sum(len(rows) for rows, _ in fb.prefix_groups)
        logits = self.runner.forward(fb)
        for r in batch:
            r.kv_len += 1
        self.stats.decode_tokens += len(batch)
        return self._sample_and_advance(batch, logits)

    def _sample_and_advance(self, reqs: list[Req], logits: torch.Tensor) -> list[TokenOutput]:
        rows = [
            SampleRow(r.params, r.input_ids, r.output_ids, r.generator, r.banned_ids())
            for r in reqs
        ]
        want = any(r.return_logprob for r in reqs)
        mask = batch_allowed_mask([r.grammar for r in reqs], self.runner.config.vocab_size)
        res = self.sampler.sample(logits, rows, [r.top_logprobs_num for r in reqs], want, mask)
        outputs = []
        for i, (req, tok) in enumerate(zip(reqs, res.token_ids)):
            req.append_token(tok)
            new_ids = [tok]
            if self.jump_forward and not req.finished and can_jump(req):
                forced = jump_forward(req, self.tokenizer)
                if forced is not None:
                    new_ids = forced
                    self.stats.jump_forward_tokens += len(forced) - 1
            out = make_output(req, new_ids)
            if req.return_logprob:
                out.output_token_logprobs = [(res.logprobs[i], tok)]
                if req.top_logprobs_num:
                    out.output_top_logprobs = [res.top_logprobs[i]]
            outputs.append(out)
            if req.finished:
                self._drop(req)
            elif len(new_ids) > 1:  # forced tokens to extend: back to the queue, KV cached
                self._drop(req)
                self.waiting.insert(0, req)
        return outputs

    def _drop(self, req: Req) -> None:
        """Takes the request out of every queue and releases its KV to the cache."""
        if req in self.waiting:
            self.waiting.remove(req)
        if req in self.running:
            self.running.remove(req)
        if self.chunked is req:
            self.chunked = None
        self.memory.release(req)

    def _finish(self, req: Req, reason: FinishReason) -> TokenOutput:
        req.finished = reason
        self._drop(req)
        return make_output(req, [])

    # ---- accounting ----

    def load_stats(self) -> dict:
        used = self.kv_pool.size - self.kv_pool.available_size() - self.cache.evictable_size()
        return {
            **dataclasses.asdict(self.stats),
            "num_waiting_reqs": len(self.waiting),
            "num_running_reqs": len(self.active_reqs()),
            "kv_free_tokens": self.kv_pool.available_size(),
            "cache_tokens": self.cache.total_size(),
            "token_usage": used / self.kv_pool.size,
            "cache_hit_rate": self.stats.cache_hit_rate,
            "pinned_tokens": self.pins.pinned_tokens() if self.pins is not None else 0,
            "num_pins": len(self.pins.pins) if self.pins is not None else 0,
            "max_pinned_tokens": self.pins.max_tokens if self.pins is not None else 0,
            "kv_compression_saved_tokens": self.compactor.tokens_saved,
        }

    def _log_stats(self) -> None:
        s = self.load_stats()
        logger.info(
            "running %d, waiting %d, token usage %.1f%%, cache hit rate %.1f%%, retracted %d",
            s["num_running_reqs"],
            s["num_waiting_reqs"],
            100 * s["token_usage"],
            100 * s["cache_hit_rate"],
            self.stats.retractions,
        )

    def check_memory(self) -> None:
        """Every KV slot is free, held by the cache, or held by an active request."""
        active = self.active_reqs()
        held = sum(r.kv_len - r.kv_dropped - r.cache_owned_len for r in active)
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
