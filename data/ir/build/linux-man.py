#!/usr/bin/env python3
"""Builds data/ir/linux-man: Linux man pages of sections 2 and 3 (system calls and library
functions) from Debian's `manpages-dev` package.

Known-item judgements from the pages' own structure: the NAME section's one-liner
("open, openat, creat \\- open and possibly create a file") gives the query, its text after the
dash ("open and possibly create a file"); the page without its NAME section is the one relevant
document. Its title is the page's name and section ("open(2)"). A one-liner shared by several
pages is not a query (its answer would be ambiguous). Standard library only; deterministic.
"""

import gzip
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import debian_package, workdir, write_collection  # noqa: E402

PACKAGE, VERSION = "manpages-dev", "6.03-2"
SECTIONS = ("2", "3")
# Pages shorter than this (after the NAME section is cut) say too little to be found.
MIN_CHARS = 300
# Long pages are cut here: the collection stays small enough to embed in minutes.
MAX_CHARS = 3000

ESCAPES = [
    (r"\(em", "—"), (r"\(en", "–"), (r"\(aq", "'"), (r"\(dq", '"'), (r"\(lq", '"'),
    (r"\(rq", '"'), (r"\(oq", "'"), (r"\(cq", "'"), (r"\(bu", "•"), (r"\(co", "©"),
    (r"\(mu", "×"), (r"\(ti", "~"), (r"\(ha", "^"), (r"\(rs", "\\"), (r"\(lh", ""),
    (r"\(rh", ""), (r"\(at", "@"), (r"\(sq", "□"), (r"\(ga", "`"),
    (r"\*(lq", '"'), (r"\*(rq", '"'), (r"\*(dg", "†"),
    (r"\-", "-"), (r"\~", " "), (r"\ ", " "), (r"\&", ""), (r"\%", ""), (r"\|", ""),
    (r"\^", ""), (r"\:", ""), (r"\c", ""), (r"\/", ""), (r"\,", ""), (r"\0", " "),
]
FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
SIZE = re.compile(r"\\s[-+]?\d")
BRACKET = re.compile(r"\\\[([^\]]*)\]")
NAMED = {"em": "—", "en": "–", "aq": "'", "dq": '"', "bu": "•", "lq": '"', "rq": '"'}


def inline(text: str) -> str:
    text = FONT.sub("", text)
    text = SIZE.sub("", text)
    for a, b in ESCAPES:
        text = text.replace(a, b)
    text = BRACKET.sub(lambda m: NAMED.get(m.group(1), ""), text)
    text = text.replace("\\e", "\\")
    return text


def args(rest: str) -> list:
    """Macro arguments: space-separated, "double quoted" ones may hold spaces."""
    out, cur, quoted, i = [], "", False, 0
    while i < len(rest):
        c = rest[i]
        if c == '"':
            if quoted and i + 1 < len(rest) and rest[i + 1] == '"':
                cur += '"'
                i += 1
            else:
                quoted = not quoted
        elif c in " \t" and not quoted:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    if cur:
        out.append(cur)
    return out


def render(source: str):
    """A page as (name, section, [(section heading, text lines)])."""
    sections, heading, lines = [], None, []
    title = ("", "")
    in_table, table_format = False, False
    for raw in source.splitlines():
        if raw.startswith(('.\\"', "'\\\"", '.\\\\"')) or raw.strip() in (".", "'"):
            continue
        if raw.startswith((".", "'")):
            m = re.match(r"[.']\s*(\S+)\s*(.*)", raw)
            if not m:
                continue
            macro, rest = m.group(1), m.group(2)
            a = args(rest)
            if macro == "TH":
                title = (a[0] if a else "", a[1] if len(a) > 1 else "")
            elif macro in ("SH", "SS"):
                if macro == "SH":
                    if heading is not None or lines:
                        sections.append((heading, lines))
                    heading, lines = inline(" ".join(a)).strip(), []
                else:
                    lines.append(inline(" ".join(a)).strip())
            elif macro in ("B", "I", "SM", "SB"):
                lines.append(inline(" ".join(a)))
            elif macro in ("BR", "RB", "IR", "RI", "BI", "IB"):
                lines.append(inline("".join(a)))
            elif macro in ("IP", "TP", "TQ"):
                if a and macro == "IP":
                    lines.append(inline(a[0]))
            elif macro == "TS":
                in_table, table_format = True, True
            elif macro == "TE":
                in_table = False
            elif macro in ("UR", "MT"):
                if a:
                    lines.append(inline(a[0]))
            elif macro in ("SY", "OP"):
                lines.append(inline(" ".join(a)))
            if macro in ("PP", "P", "LP", "TP", "IP", "TQ", "SS", "nf", "fi", "EX", "EE", "br",
                         "sp", "RS", "RE", "TS", "TE"):
                lines.append("")
            # Everything else (in, ad, UE, ME, YS...) only lays the text out.
            continue
        if in_table:
            if table_format:
                if raw.rstrip().endswith("."):
                    table_format = False
                continue
            if raw.startswith(("T{", "T}")):
                raw = raw.replace("T{", "").replace("T}", "")
            raw = raw.replace("\t", " ")
        lines.append(inline(raw))
    if heading is not None or lines:
        sections.append((heading, lines))
    return title, sections


def tidy(lines) -> str:
    """Source lines joined into paragraphs (one a line); layout macros end a paragraph."""
    paragraphs, current = [], []
    for line in lines:
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n".join(re.sub(r"[ \t]+", " ", p) for p in paragraphs).strip()


def main() -> None:
    with workdir() as tmp:
        tree = debian_package(PACKAGE, VERSION, Path(tmp))
        pages = []
        for section in SECTIONS:
            folder = tree / "usr/share/man" / f"man{section}"
            for path in sorted(folder.glob("*.gz")):
                if path.is_symlink():
                    continue
                source = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
                if source.lstrip().startswith(".so "):
                    continue
                pages.append((path.name[: -len(".gz")], source))
    docs, oneliners = [], {}
    for file_name, source in pages:
        (name, section), sections = render(source)
        name_text = ""
        body = []
        for heading, lines in sections:
            if heading == "NAME":
                name_text = tidy(lines)
            else:
                body.append((heading or "") + "\n" + tidy(lines))
        if " - " not in name_text:
            continue
        query = " ".join(name_text.split(" - ", 1)[1].split())
        text = "\n\n".join(body).strip()
        if len(text) < MIN_CHARS or len(query.split()) < 2:
            continue
        if len(text) > MAX_CHARS:
            cut = text.rfind("\n", 0, MAX_CHARS)
            text = text[: cut if cut > MAX_CHARS // 2 else MAX_CHARS]
        doc_id = file_name.replace(".", "-")
        docs.append({"id": doc_id, "title": f"{name.lower()}({section})", "text": text})
        oneliners.setdefault(query.lower(), []).append((doc_id, query))
    queries, qrels = [], []
    for key in sorted(oneliners, key=lambda k: oneliners[k][0][0]):
        owners = oneliners[key]
        if len(owners) != 1:
            continue
        doc_id, text = owners[0]
        qid = f"q-{doc_id}"
        queries.append({"id": qid, "text": text})
        qrels.append((qid, doc_id, 1))
    write_collection("linux-man", docs, queries, qrels)


if __name__ == "__main__":
    main()
