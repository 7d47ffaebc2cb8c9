#!/usr/bin/env python3
"""Our vector index and the anchors users would pick instead, on the same vectors, in one run.

    pip install -r examples/anchors/requirements.txt
    python3 examples/anchors/side_by_side.py [--n 100000] [--dims 384] [--queries 1000] \
        [--ef 64,100] [--threads 2] [--bench PATH] [--skip chroma] [--out results.json]

Data: `--n` low-rank vectors (a random 48-dimensional subspace of `--dims`, plus a little
full-rank noise, normalised: like sentence embeddings, neighbourhoods are neither trivial nor
uniform noise) and `--queries` fresh queries drawn the same way, split into 10 tenants of
10% each. Every system gets exactly these vectors; recall@10 is against numpy brute force.

Per system: build rate (vectors/s, wall), query p50/p99 over the queries one at a time,
recall@10, a tenant-filtered query (tenant 0 only) and memory:
- hnswlib: one index, M=16, ef_construction=100, `--threads` insert threads; the filtered
  query is one shared index with a filter callback (how hnswlib users do tenancy); memory
  is the RSS growth of this process over the build.
- ChromaDB: an in-process client on a temporary directory, same M / ef settings, filtered
  query with `where={"tenant": 0}`; memory is the RSS growth of this process.
- ours: `bench_vector --real` (release-like build of this repo, path in `--bench`) on the
  same file: the whole set as one tenant with the graph forced (`--exact-max 0`), each
  `--ef` at that fixed ef plus a `default` row with the product's ef rule (it grows with
  the tenant's size); the filtered query uses our per-tenant layout (tenant 0's vectors as
  their own tenant, the product's exact threshold) at the largest `--ef`, as the anchors'
  filtered queries; memory is the index's own heap and the benchmark process' peak RSS.
  Build cost is also printed in CPU seconds (hnswlib's: this process' CPU time over
  `add_items`, its threads included).

Results are printed as one table and written to `--out` as JSON.
"""

import argparse
import ctypes
import gc
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np


def rss_mib():
    # Hand freed heap back to the OS first, so a growth is the new structure, not reuse of
    # pages numpy freed earlier.
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def make_data(n, queries, dims, seed=42):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((48, dims)).astype(np.float32)

    def draw(count):
        z = rng.standard_normal((count, 48)).astype(np.float32)
        x = z @ basis + 0.3 * rng.standard_normal((count, dims)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    return draw(n), draw(queries)


def truth(data, qs, k=10, allowed=None):
    out = []
    for start in range(0, len(qs), 100):
        s = qs[start:start + 100] @ data.T
        if allowed is not None:
            s[:, ~allowed] = -np.inf
        out.extend(np.argsort(-s, axis=1)[:, :k])
    return np.array(out)


def recall(found, want):
    hit = sum(len(set(f[:10]) & set(w)) for f, w in zip(found, want))
    return hit / (len(want) * 10)


def pct(lat, p):
    s = sorted(lat)
    return s[min(len(s) - 1, round((len(s) - 1) * p))] * 1e3


def write_cache(path, data, qs):
    """The beir_eval cache format bench_vector --real reads: docs `d:i`, queries `q:i`."""
    with open(path, "wb") as f:
        f.write(struct.pack("<QQ", len(data) + len(qs), data.shape[1]))
        for prefix, rows in (("d", data), ("q", qs)):
            for i, v in enumerate(rows):
                key = f"{prefix}:{i}".encode()
                f.write(struct.pack("<I", len(key)))
                f.write(key)
                f.write(v.astype("<f4").tobytes())


def run_hnswlib(data, qs, want, tenant, want_t, efs, threads):
    import hnswlib

    before = rss_mib()
    idx = hnswlib.Index(space="ip", dim=data.shape[1])
    idx.init_index(max_elements=len(data), M=16, ef_construction=100)
    idx.set_num_threads(threads)
    t0, c0 = time.perf_counter(), time.process_time()
    idx.add_items(data, np.arange(len(data)))
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    mem = rss_mib() - before
    idx.set_num_threads(1)
    rows = []
    for ef in efs:
        idx.set_ef(ef)
        lat, found = [], []
        for q in qs:
            t = time.perf_counter()
            labels, _ = idx.knn_query(q, k=10)
            lat.append(time.perf_counter() - t)
            found.append(labels[0])
        rows.append({"ef": ef, "p50Ms": pct(lat, 0.5), "p99Ms": pct(lat, 0.99),
                     "recallAt10": recall(found, want)})
    ef_f = max(efs)
    idx.set_ef(ef_f)
    lat, found = [], []
    for q in qs:
        t = time.perf_counter()
        labels, _ = idx.knn_query(q, k=10, filter=lambda i: tenant[i] == 0)
        lat.append(time.perf_counter() - t)
        found.append(labels[0])
    filtered = {"ef": ef_f, "p50Ms": pct(lat, 0.5), "p99Ms": pct(lat, 0.99),
                "recallAt10": recall(found, want_t)}
    # hnswlib's own layout, for comparison with the RSS growth: per element the vector, 2M
    # links plus a count on layer 0 and an 8-byte label (upper layers and locks not counted).
    layout = len(data) * (data.shape[1] * 4 + (2 * 16 + 1) * 4 + 8) / 2**20
    return {"system": "hnswlib", "buildSecs": build, "vectorsPerSec": len(data) / build,
            "buildCpuSecs": build_cpu,
            "memoryMiB": mem, "layoutMiB": layout, "rows": rows, "filtered": filtered}


def run_chroma(data, qs, want, tenant, want_t, efs):
    import chromadb

    before = rss_mib()
    with tempfile.TemporaryDirectory() as d:
        client = chromadb.PersistentClient(path=d)
        rows = []
        build = None
        for ef in efs:
            col = client.create_collection(
                f"bench{ef}",
                configuration={"hnsw": {"space": "cosine", "max_neighbors": 16,
                                        "ef_construction": 100, "ef_search": ef}})
            if build is None:
                t0 = time.perf_counter()
            step = 5000
            for s in range(0, len(data), step):
                col.add(ids=[str(i) for i in range(s, min(s + step, len(data)))],
                        embeddings=data[s:s + step],
                        metadatas=[{"tenant": int(tenant[i])}
                                   for i in range(s, min(s + step, len(data)))])
            if build is None:
                build = time.perf_counter() - t0
                mem = rss_mib() - before
            lat, found = [], []
            for q in qs:
                t = time.perf_counter()
                r = col.query(query_embeddings=[q], n_results=10)
                lat.append(time.perf_counter() - t)
                found.append([int(x) for x in r["ids"][0]])
            rows.append({"ef": ef, "p50Ms": pct(lat, 0.5), "p99Ms": pct(lat, 0.99),
                         "recallAt10": recall(found, want)})
            if ef == max(efs):
                lat, found = [], []
                for q in qs:
                    t = time.perf_counter()
                    r = col.query(query_embeddings=[q], n_results=10, where={"tenant": 0})
                    lat.append(time.perf_counter() - t)
                    found.append([int(x) for x in r["ids"][0]])
                filtered = {"ef": ef, "p50Ms": pct(lat, 0.5), "p99Ms": pct(lat, 0.99),
                            "recallAt10": recall(found, want_t)}
            if ef != max(efs):
                client.delete_collection(f"bench{ef}")
    return {"system": "chromadb", "buildSecs": build, "vectorsPerSec": len(data) / build,
            "memoryMiB": mem, "rows": rows, "filtered": filtered}


def run_ours(bench, data, qs, tenant, efs, workdir):
    whole = os.path.join(workdir, "all.vec")
    write_cache(whole, data, qs)
    out = os.path.join(workdir, "ours.json")
    ef_list = ",".join(str(e) for e in efs)
    subprocess.run([bench, "--real", whole, "--exact-max", "0", "--queries", str(len(qs)),
                    "--ef", ef_list, "--json", out], check=True)
    with open(out) as f:
        r = json.load(f)
    # Our tenancy: the 10% tenant is its own index, with the product's defaults.
    part = os.path.join(workdir, "tenant0.vec")
    write_cache(part, data[tenant == 0], qs)
    out_t = os.path.join(workdir, "ours_t.json")
    subprocess.run([bench, "--real", part, "--queries", str(len(qs)), "--ef", str(max(efs)),
                    "--json", out_t], check=True)
    with open(out_t) as f:
        rt = json.load(f)
    graph_rows = [x for x in r["rows"] if x["ef"] not in ("exact", "default")]
    ft = next(x for x in rt["rows"] if x["ef"] == str(max(efs)))
    default = [dict(x, ef=r.get("defaultEf")) for x in r["rows"] if x["ef"] == "default"]
    return {"system": "aigentable", "buildSecs": r["buildSecs"],
            "vectorsPerSec": len(data) / r["buildSecs"], "buildCpuSecs": r["buildCpuSecs"],
            "memoryMiB": r["indexHeapMiB"], "peakRssMiB": r["peakRssMiB"],
            "kernel": r["kernel"],
            "rows": [{"ef": int(x["ef"]), "p50Ms": x["p50Ms"], "p99Ms": x["p99Ms"],
                      "recallAt10": x["recallAt10"]} for x in graph_rows],
            "exact": next(x for x in r["rows"] if x["ef"] == "exact"),
            **({"default": default[0]} if default else {}),
            "filtered": {"ef": max(efs), "p50Ms": ft["p50Ms"], "p99Ms": ft["p99Ms"],
                         "recallAt10": ft["recallAt10"]}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ef", default="64,100")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", default="target/release/examples/bench_vector")
    ap.add_argument("--skip", default="", help="comma list of: ours, hnswlib, chroma")
    ap.add_argument("--out", default="side_by_side.json")
    a = ap.parse_args()
    efs = [int(x) for x in a.ef.split(",")]
    skip = set(filter(None, a.skip.split(",")))

    data, qs = make_data(a.n, a.queries, a.dims)
    tenant = np.arange(a.n) % 10
    want = truth(data, qs)
    want_t = truth(data, qs, allowed=(tenant == 0))
    load = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as work:
        if "ours" not in skip:
            results.append(run_ours(a.bench, data, qs, tenant, efs, work))
        if "hnswlib" not in skip:
            results.append(run_hnswlib(data, qs, want, tenant, want_t, efs, a.threads))
        if "chroma" not in skip:
            results.append(run_chroma(data, qs, want, tenant, want_t, efs))
    print(f"\n{a.n} x {a.dims} low-rank vectors, {a.queries} queries, M=16 ef_construction=100; "
          f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}\n")
    print("| system | build vectors/s | ef | p50 ms | p99 ms | recall@10 | "
          "filtered p50 ms | filtered p99 ms | filtered recall | memory MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cpu = {r["system"]: r["buildCpuSecs"] for r in results if "buildCpuSecs" in r}
    for r in results:
        f = r["filtered"]
        rows = r["rows"] + ([dict(r["default"], ef=f"default ({r['default']['ef']})")]
                            if "default" in r else [])
        for row in rows:
            print(f"| {r['system']} | {r['vectorsPerSec']:.0f} | {row['ef']} | "
                  f"{row['p50Ms']:.3f} | {row['p99Ms']:.3f} | {row['recallAt10']:.4f} | "
                  f"{f['p50Ms']:.3f} | {f['p99Ms']:.3f} | {f['recallAt10']:.4f} | "
                  f"{r['memoryMiB']:.0f} |")
    for system, secs in cpu.items():
        print(f"{system}: build {secs:.1f} CPU s ({a.n / secs:.0f} vectors per CPU s)")
    with open(a.out, "w") as f:
        json.dump({"n": a.n, "dims": a.dims, "queries": a.queries, "load": load,
                   "results": results}, f, indent=2)
    print(f"\nwritten to {a.out}")


if __name__ == "__main__":
    sys.exit(main())
