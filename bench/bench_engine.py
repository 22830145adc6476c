"""Tokens per second through `LlamaCpp.stream` against calling llama-cpp-python directly.

Same model, same prompt token ids, same sampling settings and seed, same ``Llama`` object, in
the same run; the runs alternate, and each column shows its best of several rounds, so that
a noisy neighbour (this machine's 2 cores are shared) distorts the ratios as little as possible. The
model is the tiny random-weight Llama 3 (or ``$CHATLANE_MODEL``). With the tiny model a token
takes about a millisecond, so per-token overhead shows up far more than on a real model.

Also: constrained (llguidance, a JSON schema) against unconstrained generation, and
llama-cpp-python's own grammar-constrained generation for the same schema.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOKENS = 200
ROUNDS = 7
SEED = 1234
SAMPLING: dict[str, Any] = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05}
# A schema that lets a random model write for a while: many short bounded strings.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "string", "maxLength": 12},
            "minItems": 40,
            "maxItems": 40,
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}


def _model_path() -> Path:
    env = os.environ.get("CHATLANE_MODEL")
    if env:
        return Path(env)
    from chatlane.testing import tiny_llama3_gguf

    return tiny_llama3_gguf()


def _timed(run: Callable[[], int]) -> tuple[float, float, int]:
    """Wall-clock seconds, CPU seconds of this process, and tokens generated."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = run()
    return time.perf_counter() - wall, time.process_time() - cpu, tokens


def main() -> None:
    from llama_cpp import llama_vocab_is_eog
    from llama_cpp.llama_grammar import LlamaGrammar

    from chatlane.backends.llamacpp import LlamaCpp
    from chatlane.events import TextDelta
    from chatlane.request import ChatRequest

    path = _model_path()
    # One thread: on a shared 2-core machine llama.cpp's worker threads spin while they wait
    # for each other, and another process's load then swamps the numbers. With one thread the
    # CPU time per token measures the work itself.
    backend = LlamaCpp(path, n_ctx=2048, n_threads=1)
    llm = backend.llama
    request = ChatRequest.coerce(
        "Write a long story about a lighthouse keeper.",
        max_tokens=TOKENS,
        seed=SEED,
        temperature=SAMPLING["temperature"],
        top_p=SAMPLING["top_p"],
        top_k=SAMPLING["top_k"],
    )
    prompt = list(backend.render(request).tokens)
    constrained = ChatRequest.coerce(request, response_format=SCHEMA, max_tokens=1000)
    peer_grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)

    def chatlane_stream(req: ChatRequest = request) -> int:
        with backend.stream(req) as stream:
            for event in stream:
                if isinstance(event, TextDelta):
                    pass
            usage = stream.response.usage
        return usage.completion_tokens if usage else 0

    def llama_cpp_completion(grammar: Any = None, max_tokens: int = TOKENS) -> int:
        # What a user of llama-cpp-python writes: create_completion(stream=True) on the ids.
        llm.reset()
        llm.set_seed(SEED)
        n = 0
        for _chunk in llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            stream=True,
            seed=SEED,
            grammar=grammar,
            **SAMPLING,
        ):
            n += 1
        return n

    vocab = llm._model.vocab
    end_tokens = {t for t in range(llm.n_vocab()) if llama_vocab_is_eog(vocab, t)}

    def llama_cpp_generate() -> int:
        # The lowest level: the token generator, no detokenizing, a set lookup for the end.
        llm.reset()
        llm.set_seed(SEED)
        n = 0
        for token in llm.generate(
            prompt,
            temp=SAMPLING["temperature"],
            top_p=SAMPLING["top_p"],
            top_k=SAMPLING["top_k"],
            min_p=SAMPLING["min_p"],
        ):
            if token in end_tokens:
                break
            n += 1
            if n >= TOKENS:
                break
        return n

    runs: dict[str, Callable[[], int]] = {
        # The raw loop and chatlane run next to each other in every round (see the overhead).
        "llama-cpp-python generate() loop": llama_cpp_generate,
        "chatlane LlamaCpp.stream": chatlane_stream,
        "llama-cpp-python create_completion(stream=True)": llama_cpp_completion,
        "chatlane LlamaCpp.stream, JSON schema (llguidance)": lambda: chatlane_stream(constrained),
        "llama-cpp-python, JSON schema (its GBNF grammar)": lambda: llama_cpp_completion(
            peer_grammar, 1000
        ),
    }
    for run in runs.values():  # warm up (llguidance builds its tokenizer view once)
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    cpu_rates: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, int] = {}
    order = list(runs.items())
    for round_ in range(ROUNDS):
        for name, run in order if round_ % 2 else reversed(order):
            wall, cpu, tokens = _timed(run)
            rates[name].append(tokens / wall)
            cpu_rates[name].append(tokens / cpu)
            counts[name] = tokens
    backend.close()

    base = "llama-cpp-python create_completion(stream=True)"
    wall_base = max(rates[base])
    cpu_base = max(cpu_rates[base])
    print(f"model: {path.name}, prompt {len(prompt)} tokens, best of {ROUNDS} runs, 1 thread")
    print(
        f"{'run':<52} {'tokens':>6} {'tok/s wall':>10} {'ratio':>6} {'tok/s CPU':>10} {'ratio':>6}"
    )
    for name in runs:
        wall_rate = max(rates[name])
        cpu_rate = max(cpu_rates[name])
        print(
            f"{name:<52} {counts[name]:>6} {wall_rate:>10.0f} {wall_rate / wall_base:>5.2f}x"
            f" {cpu_rate:>10.0f} {cpu_rate / cpu_base:>5.2f}x"
        )
    # The overhead is read from pairs: each round runs the raw loop and chatlane back to back,
    # so both see the same neighbours; the median of the rounds' ratios is far steadier than
    # a ratio of two bests taken in different rounds.
    free_rounds = cpu_rates["chatlane LlamaCpp.stream"]
    raw_rounds = cpu_rates["llama-cpp-python generate() loop"]
    guided_rounds = cpu_rates["chatlane LlamaCpp.stream, JSON schema (llguidance)"]
    overhead = statistics.median(r / f - 1 for r, f in zip(raw_rounds, free_rounds, strict=True))
    guided_ratio = statistics.median(g / f for g, f in zip(guided_rounds, free_rounds, strict=True))
    print(
        f"chatlane overhead over the raw generate() loop (CPU, median of {ROUNDS} paired rounds):"
        f" {overhead:+.1%} (target: at most +5%)"
    )
    print(
        f"constrained / unconstrained (chatlane, CPU tok/s, median of pairs): {guided_ratio:.2f}x"
    )
