"""The reference a sparse-matrix library gives for the walks of `reach`: reads an edge list
CSV (a header, then `from,to` per line; each line one edge of weight 1), builds the symmetric
strength matrix A (A[a, b] = the edges between a and b, either direction), and computes A²
(and A³ with --hops 3) with scipy on one thread, for every user or for the rows of --focus.

Prints one JSON line: the seconds to build A, to multiply (the best of five rounds), and the
number of nonzero off-diagonal entries of each power (the `reach` rows chatflow writes for
that hop count).

Usage: python walks_scipy.py EDGES.csv [--hops 2|3] [--focus FILE]
"""

import argparse
import json
import os
import time

# One thread, as chatflow's one worker in the benchmark.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("edges")
    parser.add_argument("--hops", type=int, default=2, choices=(2, 3))
    parser.add_argument("--focus")
    args = parser.parse_args()

    began = time.perf_counter()
    data = np.loadtxt(args.edges, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    ids, flat = np.unique(data.ravel(), return_inverse=True)
    src, dst = flat.reshape(-1, 2).T
    keep = src != dst
    src, dst = src[keep], dst[keep]
    n = len(ids)
    ones = np.ones(2 * len(src), dtype=np.int64)
    a = sp.csr_matrix((ones, (np.concatenate([src, dst]), np.concatenate([dst, src]))), shape=(n, n))
    a.sum_duplicates()
    built = time.perf_counter()

    rows, selves = a, None
    if args.focus:
        wanted = [int(line) for line in open(args.focus) if line.strip()]
        index = {v: i for i, v in enumerate(ids)}
        selves = [index[v] for v in wanted if v in index]
        rows = a[selves]
    # The products alone, best of five (the machine is shared); then the rows chatflow
    # writes: each power without its diagonal (a user's walks back to itself).
    multiply = []
    for _ in range(5):
        began_product = time.perf_counter()
        powers = [rows @ a]
        for _ in range(3, args.hops + 1):
            powers.append(powers[-1] @ a)
        multiply.append(time.perf_counter() - began_product)
    counts = {}
    for hops, power in enumerate(powers, start=2):
        off = power.tolil() if selves else power.copy()
        if selves:
            for i, f in enumerate(selves):
                off[i, f] = 0
            off = off.tocsr()
        else:
            off.setdiag(0)
        off.eliminate_zeros()
        counts[f"walks{hops}_nonzero"] = int(off.nnz)
    done = time.perf_counter()
    print(json.dumps({
        "reference": "scipy",
        "scipy": __import__("scipy").__version__,
        "edges": int(len(data)),
        "users": int(n),
        "hops": args.hops,
        "build_seconds": round(built - began, 3),
        "multiply_seconds": round(min(multiply), 4),
        "multiply_seconds_all": [round(m, 4) for m in multiply],
        "with_diagonal_removed_seconds": round(done - built, 3),
        **counts,
    }))


if __name__ == "__main__":
    main()
