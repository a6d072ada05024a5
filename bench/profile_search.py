"""Where an embedded-engine search spends its time: run searches in a loop under py-spy, then
summarise the samples (prints; asserts nothing).

    PYTHONPATH=. py-spy record --format raw --rate 2000 -o /tmp/search.txt -- \\
        python bench/profile_search.py --n 50000 --seconds 20 [--filter cate_id=3]
    python bench/profile_search.py --summarize /tmp/search.txt

The table is bench/ann.py's (clustered 512-d vectors, HNSW M=16, efConstruction=64, cate_id =
i % 10), built through ``EmbeddedEngine.upsert``; each query is a prebuilt ``SearchPlan`` with no
stored fields and its vector as Python floats (so the same script profiles older code too). Only the search loop is sampled in the summary: for
every function seen under ``EmbeddedEngine.search``, the share of those samples in which it is on
the stack (inclusive) and at the top of the Python stack (self).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def parse_filter(text: str | None):
    from adapter.plan.tree import Compare

    if not text:
        return None
    field, value = text.split("=", 1)
    return Compare(field=field, op="=", value=int(value))


def run(args: argparse.Namespace) -> None:
    import faiss

    from adapter.engines.embedded import EmbeddedEngine
    from adapter.plan.tree import SearchParams, SearchPlan
    from adapter.schema.model import VectorIndexType
    from bench.ann import build_engine_table, make_data, make_spec

    rng = np.random.default_rng(0)
    data, queries = make_data(rng, args.n, 300, 512, "clustered")
    root = Path(tempfile.mkdtemp(prefix="profile-search-"))
    engine = EmbeddedEngine(root)
    try:
        spec = make_spec("profiled", VectorIndexType.HNSW, 512, 16, 64, None)
        build_engine_table(engine, spec, data, rng)
        faiss.omp_set_num_threads(1)
        # vectors as Python floats: the plans every version of SearchPlan takes (before/after profiles)
        plans = [SearchPlan(table=spec.name, vectors=[q.tolist()], k=10, hit=10, output_fields=[],
                            filter=parse_filter(args.filter), search_params=SearchParams(ef_search=args.ef))
                 for q in queries]
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            for plan in plans:
                engine.search(plan)
            done += len(plans)
        elapsed = time.perf_counter() - t0
        print(f"{done} searches in {elapsed:.1f} s: {done / elapsed:.0f} q/s (filter {args.filter or 'none'}, ef {args.ef})")
    finally:
        engine.close()
        shutil.rmtree(root, ignore_errors=True)


def summarize(path: str, top: int) -> None:
    """py-spy raw output: one 'frame;frame;... count' line per distinct stack."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [FRAME.match(f) for f in stack.split(";")]
        names = [f"{m['func']} ({Path(m['file']).name})" if m else "?" for m in frames]
        try:
            start = next(i for i, n in enumerate(names) if n.startswith("EmbeddedEngine.search (embedded.py"))
        except StopIteration:
            continue  # setup, table building: not the search loop
        inside = names[start:]
        n = int(count)
        total += n
        for name in set(inside):
            inclusive[name] += n
        own[inside[-1]] += n
    print(f"{total} samples inside EmbeddedEngine.search")
    print(f"{'inclusive':>9} {'self':>6}  function")
    for name, n in inclusive.most_common(top):
        print(f"{100 * n / total:>8.1f}% {100 * own[name] / total:>5.1f}%  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--filter", default=None, help="FIELD=INT, e.g. cate_id=3 (10%% of rows)")
    ap.add_argument("--summarize", metavar="PYSPY_RAW", default=None)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    if args.summarize:
        summarize(args.summarize, args.top)
    else:
        run(args)


if __name__ == "__main__":
    main()
