"""Shared helpers of the collection build scripts (Python standard library only)."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IR = HERE.parent


def debian_package(name: str, version: str, into: Path) -> Path:
    """Downloads one pinned Debian package with `apt-get download` and unpacks it with
    `dpkg-deb -x` (no root install needed). Returns the unpacked tree."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["apt-get", "download", f"{name}={version}"],
        cwd=into,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    debs = sorted(into.glob(f"{name}_*.deb"))
    if len(debs) != 1:
        raise SystemExit(f"expected one {name} .deb in {into}, found {debs}")
    tree = into / f"tree-{name}"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], check=True)
    return tree


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="p3ak-ir-")


def write_collection(name: str, docs, queries, qrels) -> Path:
    """Writes docs.jsonl, queries.jsonl and qrels.tsv under data/ir/<name>/ (sorted, so a
    rebuild gives the same bytes)."""
    out = IR / name
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d["id"], "title": d["title"], "text": d["text"]},
                               ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps({"id": q["id"], "text": q["text"]}, ensure_ascii=False) + "\n")
    with open(out / "qrels.tsv", "w", encoding="utf-8") as f:
        f.write("query_id\tdoc_id\trelevance\n")
        for q, d, r in qrels:
            f.write(f"{q}\t{d}\t{r}\n")
    size = sum(os.path.getsize(out / n) for n in ("docs.jsonl", "queries.jsonl", "qrels.tsv"))
    print(f"{name}: {len(docs)} documents, {len(queries)} queries, {len(qrels)} judgements, "
          f"{size / 1e6:.2f} MB")
    return out
