#!/usr/bin/env python3
"""Builds data/ir/debian-handbook: long prose, the sections of "The Debian Administrator's
Handbook" (English HTML from Debian's `debian-handbook` package).

Known-item judgements from the book's own structure: every section heading (levels 2-5, its
number dropped) of at least three words is a query; the section's own text, up to the next
heading of any level, is its one relevant document. The heading is not in the document: the
title is "The Debian Administrator's Handbook / <chapter>". A heading that occurs twice is not a
query. Standard library only; deterministic.
"""

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import debian_package, workdir, write_collection  # noqa: E402

PACKAGE, VERSION = "debian-handbook", "11.20220922"
BOOK = "The Debian Administrator's Handbook"
MIN_CHARS = 200
MAX_CHARS = 3000
MIN_QUERY_WORDS = 3
SKIP_CLASSES = {"toc", "navfooter", "docnav", "navheader", "list-of-figures", "list-of-tables",
                "list-of-examples", "index", "legalnotice"}
BLOCKS = {"div", "p", "pre", "li", "tr", "dt", "dd", "table", "ul", "ol", "dl", "blockquote",
          "br", "h1", "h2", "h3", "h4", "h5", "h6"}
NUMBER = re.compile(r"^(Chapter\s+\d+\.|Appendix\s+[A-Z]\.|[0-9A-Z]+(\.[0-9]+)*\.)\s*")


class Sections(HTMLParser):
    """Splits a page into (level, anchor, heading, text) at every h1-h5 title."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections = []
        self.heading = None  # [level, anchor, parts] while inside a heading
        self.skip_depth = 0
        self.stack = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if tag in ("script", "style", "head") or classes & SKIP_CLASSES:
            self.stack.append((tag, True))
            self.skip_depth += 1
            return
        if tag in ("div", "span", "p", "ul", "ol", "dl", "table", "pre", "code", "a", "em",
                   "strong", "li", "dt", "dd", "tr", "td", "th", "tbody", "thead", "blockquote",
                   "h1", "h2", "h3", "h4", "h5", "h6", "acronym", "sup", "sub", "span", "b",
                   "i", "tt", "kbd", "var", "abbr", "q", "cite", "small", "big", "u"):
            self.stack.append((tag, False))
        if self.skip_depth:
            return
        if re.fullmatch(r"h[1-5]", tag) and "title" in classes:
            self.flush()
            self.heading = [int(tag[1]), None, []]
        elif tag == "a" and self.heading is not None and a.get("id") and self.heading[1] is None:
            self.heading[1] = a["id"]
        if tag in BLOCKS:
            self.text.append("\n")

    def handle_endtag(self, tag):
        # Pop to the matching tag (HTML here is well formed XHTML).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for _, skipping in self.stack[i:]:
                    if skipping:
                        self.skip_depth -= 1
                del self.stack[i:]
                break
        if self.skip_depth:
            return
        if re.fullmatch(r"h[1-5]", tag) and self.heading is not None:
            level, anchor, parts = self.heading
            self.heading = None
            self.current = (level, anchor, " ".join("".join(parts).split()))
            self.text = []
        elif tag in BLOCKS:
            self.text.append("\n")

    def handle_data(self, data):
        if self.skip_depth:
            return
        if self.heading is not None:
            self.heading[2].append(data)
        else:
            self.text.append(data)

    def flush(self):
        current = getattr(self, "current", None)
        if current is not None:
            paragraphs = [" ".join(p.split()) for p in "".join(self.text).split("\n")]
            self.sections.append((*current, "\n".join(p for p in paragraphs if p)))
        self.current = None
        self.text = []

    def close(self):
        super().close()
        self.flush()


def sort_key(number: str):
    return [int(p) if p.isdigit() else ord(p) - ord("A") + 1000 for p in number.split(".") if p]


def main() -> None:
    with workdir() as tmp:
        tree = debian_package(PACKAGE, VERSION, Path(tmp))
        html = tree / "usr/share/doc/debian-handbook/html/en-US"
        pages = {p.name: p.read_text(encoding="utf-8") for p in sorted(html.glob("*.html"))}
    seen, sections, chapters = set(), [], {}
    for name in sorted(pages):
        parser = Sections()
        parser.feed(pages[name])
        parser.close()
        # The foreword and the preface number their sections 1, 2...: their chapter is the
        # page's own top heading, not the chapter of that number.
        page_chapter = next((h for lv, _, h, _ in parser.sections if lv == 1), None)
        for level, anchor, heading, text in parser.sections:
            if not anchor or anchor in seen:
                continue
            seen.add(anchor)
            m = NUMBER.match(heading)
            if not m:
                continue
            number = re.sub(r"^(Chapter|Appendix)\s+", "", m.group(1)).rstrip(".")
            plain = heading[m.end():].strip()
            if level == 1:
                chapters[number] = plain
            own = None
            if page_chapter is not None and not NUMBER.match(page_chapter):
                own = page_chapter
            sections.append((sort_key(number), name, level, own, number, plain, text))
    sections.sort(key=lambda s: (s[0], s[1]))
    docs, headings = [], {}
    for _, _, level, own, number, plain, text in sections:
        if level == 1 or len(text) < MIN_CHARS:
            continue
        chapter = own or chapters.get(number.split(".")[0], "")
        if len(text) > MAX_CHARS:
            cut = text.rfind("\n", 0, MAX_CHARS)
            text = text[: cut if cut > MAX_CHARS // 2 else MAX_CHARS]
        doc_id = f"s{len(docs) + 1:04d}"
        docs.append({"id": doc_id, "title": f"{BOOK} / {chapter}", "text": text})
        headings.setdefault(plain.lower(), []).append((doc_id, plain))
    queries, qrels = [], []
    for doc in docs:
        for key, owners in headings.items():
            if owners[0][0] != doc["id"]:
                continue
            if len(owners) != 1 or len(key.split()) < MIN_QUERY_WORDS:
                continue
            qid = "q-" + doc["id"]
            queries.append({"id": qid, "text": owners[0][1]})
            qrels.append((qid, doc["id"], 1))
    write_collection("debian-handbook", docs, queries, qrels)


if __name__ == "__main__":
    main()
