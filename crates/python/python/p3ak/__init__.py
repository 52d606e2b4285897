"""P3AK for Python: the encrypted vault, its search, its audit log, and the policy engine.

    import p3ak

    with p3ak.open("notes.vault", passphrase) as vault:
        vault.ingest(["docs/"])
        for hit in vault.search("key rotation", mode="bm25").hits:
            print(hit.title, hit.score)

The vault and policy parts run in the native extension (`p3ak._native`, built from the
project's Rust crates). `p3ak.plugin`, the helper for writing plugins, is pure Python and does
not load it: `import p3ak.plugin` works where only the Python sources are.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what `__getattr__` below hands out, for type checkers and IDEs
    from ._api import (
        AuditLog,
        AuditReport,
        ClosedError,
        DamagedError,
        Document,
        DocumentInfo,
        IngestError,
        IngestReport,
        InvalidInputError,
        LockedError,
        LogEntry,
        NotFoundError,
        P3akError,
        PolicyError,
        SearchHit,
        SearchResults,
        SignalScore,
        Vault,
        VerifyReport,
        WrongPassphraseError,
        audit_log,
        create,
        install_model,
        model_installed,
        models_dir,
        open,
    )
    from . import policy

# Loaded on first use, so that `p3ak.plugin` never needs the native extension.
_API = {
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
}

__all__ = sorted(_API | {"policy", "plugin", "__version__"})


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("._api", __name__), name)
    if name in ("policy", "plugin"):
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'p3ak' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
