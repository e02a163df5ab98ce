"""The cache-hit scenario's searches: the share asked for repeats a small pool, the rest are all new, and both
systems get the same sequence."""

from __future__ import annotations

import json

from bench.cache_mix import POOL, mixed_arguments


def test_the_share_asked_for_repeats_the_pool_and_the_rest_are_new() -> None:
    make = mixed_arguments(0.8, 3000)
    searches = [json.dumps(make(i), sort_keys=True) for i in range(1000)]
    counts: dict[str, int] = {}
    for search in searches:
        counts[search] = counts.get(search, 0) + 1
    repeated = [s for s, n in counts.items() if n > 1]
    assert len(repeated) == POOL
    assert sum(counts[s] for s in repeated) == 800
    assert sum(1 for n in counts.values() if n == 1) == 200  # every other search is new
    assert searches == [json.dumps(mixed_arguments(0.8, 3000)(i), sort_keys=True) for i in range(1000)]


def test_no_repeats_and_only_repeats_at_the_ends() -> None:
    assert len({json.dumps(mixed_arguments(0.0, 3000)(i), sort_keys=True) for i in range(500)}) == 500
    assert len({json.dumps(mixed_arguments(1.0, 3000)(i), sort_keys=True) for i in range(500)}) == POOL
