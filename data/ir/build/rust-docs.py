#!/usr/bin/env python3
"""Builds data/ir/rust-docs: source code, the documented functions of a few well-known Rust
crates downloaded from crates.io (pinned versions, checked against their SHA-256).

Known-item judgements from the code's own structure: a function's doc comment (`///`) gives the
query, its first sentence; the function without its doc comment (signature and body) is the one
relevant document. The title is the crate and the file ("itertools 0.14.0 / src/lib.rs"). A first
sentence that several functions share is not a query. Standard library only; deterministic.
"""

import hashlib
import io
import re
import sys
import tarfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_collection  # noqa: E402

# (name, version, SHA-256 of the .crate file as crates.io serves it); a mismatch stops the build.
CRATES = [
    ("itertools", "0.14.0", "2b192c782037fadd9cfa75548310488aabdbf3d2da73885b31bd0abd03351285"),
    ("bytes", "1.12.1", "fc652a48c352aef3ea3aed32080501cf3ef6ed5da78602a020c991775b0aff04"),
    ("url", "2.5.8", "ff67a8a4397373c3ef660812acab3268222035010ab8680ec4215f38ba3d0eed"),
    ("semver", "1.0.28", "8a7852d02fc848982e0c167ef163aaff9cd91dc640ba85e263cb1ce46fae51cd"),
    ("indexmap", "2.14.2", "cc4e190f5d26ca7051642629da2c52fc03bde85a03197c99408dcd291734c855"),
    ("bstr", "1.13.1", "6bb31b46c14244e20ee9984b11bf5c992b91fb6939fea616e3512c8baecdbe5f"),
]
MIN_QUERY_WORDS = 4
MIN_BODY_LINES = 3
MAX_CHARS = 3000

FN = re.compile(
    r"^\s*(pub(\([^)]*\))?\s+)?(default\s+)?(const\s+)?(async\s+)?(unsafe\s+)?"
    r"(extern\s+\"[^\"]*\"\s+)?fn\s+\w+"
)


def fetch(name: str, version: str, sha256: str) -> dict:
    url = f"https://static.crates.io/crates/{name}/{name}-{version}.crate"
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{name} {version}: sha256 {digest}, expected {sha256}")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            path = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if member.isfile() and path.startswith("src/") and path.endswith(".rs"):
                f = tar.extractfile(member)
                if f is not None:
                    files[path] = f.read().decode("utf-8", "replace")
    return files


def first_sentence(doc_lines) -> str:
    """The doc comment's first paragraph up to its first full stop, markdown links simplified."""
    paragraph = []
    for line in doc_lines:
        if not line.strip():
            if paragraph:
                break
            continue
        if line.strip().startswith(("#", "```")):
            break
        paragraph.append(line.strip())
    text = " ".join(paragraph)
    m = re.search(r"\.(\s|$)", text)
    if m:
        text = text[: m.start()]
    text = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[`([^`\]]+)`\]", r"`\1`", text)
    return " ".join(text.split())


def body_end(lines, start: int):
    """Index of the line closing the function whose signature starts at `start`, or None for a
    declaration without a body. Braces inside strings and comments are rare enough in these
    crates' function bodies; a function whose braces never balance is skipped."""
    depth, opened = 0, False
    for i in range(start, min(len(lines), start + 400)):
        code = re.sub(r"//.*", "", lines[i])
        code = re.sub(r"'(\\.|[^\\'])'", "''", code)
        code = re.sub(r'"(\\.|[^"\\])*"', '""', code)
        for c in code:
            if c == "{":
                depth += 1
                opened = True
            elif c == "}":
                depth -= 1
            elif c == ";" and not opened and depth == 0:
                return None
        if opened and depth == 0:
            return i
    return None


def functions(path: str, source: str):
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip().startswith("///"):
            i += 1
            continue
        doc = []
        while i < len(lines) and lines[i].strip().startswith("///"):
            doc.append(lines[i].strip()[3:])
            i += 1
        j = i
        while j < len(lines) and (lines[j].strip().startswith(("#[", "//")) or not lines[j].strip()):
            j += 1
        if j >= len(lines) or not FN.match(lines[j]):
            continue
        end = body_end(lines, j)
        if end is None:
            continue
        code = lines[j : end + 1]
        indent = min(len(l) - len(l.lstrip()) for l in code if l.strip())
        code = [l[indent:].rstrip() for l in code]
        yield first_sentence(doc), code
        i = end + 1


def main() -> None:
    docs, sentences, texts = [], {}, set()
    for name, version, sha256 in CRATES:
        files = fetch(name, version, sha256)
        for path in sorted(files):
            for query, code in functions(path, files[path]):
                if len(code) < MIN_BODY_LINES:
                    continue
                text = "\n".join(code)
                if len(text) > MAX_CHARS:
                    cut = text.rfind("\n", 0, MAX_CHARS)
                    text = text[: cut if cut > 0 else MAX_CHARS]
                # The same code twice (a vault stores identical content once) would make a
                # query's answer ambiguous: the first copy is kept.
                if text in texts:
                    continue
                texts.add(text)
                doc_id = f"{name}-{len(docs) + 1:05d}"
                docs.append({"id": doc_id, "title": f"{name} {version} / {path}", "text": text})
                if len(query.split()) >= MIN_QUERY_WORDS:
                    sentences.setdefault(query.lower(), []).append((doc_id, query))
    queries, qrels = [], []
    for key in sorted(sentences, key=lambda k: sentences[k][0][0]):
        owners = sentences[key]
        if len(owners) != 1:
            continue
        doc_id, text = owners[0]
        qid = "q-" + doc_id
        queries.append({"id": qid, "text": text})
        qrels.append((qid, doc_id, 1))
    write_collection("rust-docs", docs, queries, qrels)


if __name__ == "__main__":
    main()
