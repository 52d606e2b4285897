"""Ingest and search in every mode: BM25 without a model, semantic and hybrid with it."""

from __future__ import annotations

import pytest

import p3ak


def test_ingest_a_folder(vault, notes):
    report = vault.ingest(notes, tags={"set": "notes"})
    assert (report.ingested, report.failed, report.unchanged) == (3, 0, 0)
    assert report.chunks >= 3 and report.bytes > 0
    assert {f["status"] for f in report.files} == {"ingested"}
    assert "semantic search is off" in report.embedding["message"], "no model in this home"
    assert len(vault.list(tags={"set": "notes"})) == 3
    again = vault.ingest([notes / "garden.txt"])
    assert (again.ingested, again.unchanged) == (0, 1)


def test_ingest_with_a_missing_file(vault, notes, tmp_path):
    missing = tmp_path / "missing.md"
    with pytest.raises(p3ak.IngestError) as error:
        vault.ingest([notes / "garden.txt", missing])
    message = str(error.value)
    assert message.startswith(f"{missing}: ") and message.endswith("; 1 of 2 files failed")
    assert error.value.report.ingested == 1 and error.value.report.failed == 1
    report = vault.ingest([missing], strict=False)
    assert report.failed == 1 and report.files[0]["status"] == "failed"


def test_bm25_search_with_explanations(vault, notes):
    vault.ingest(notes)
    results = vault.search("rotate signing keys", mode="bm25", k=3)
    assert results.mode == "bm25" and results.signals == ["bm25"]
    top = results.hits[0]
    assert top.title == "Key rotation" or top.source.endswith("rotation.md")
    assert top.score > 0 and top.signal("bm25").rank == 1
    assert "**" in top.marked() and top.highlights
    assert results.explain()[0].startswith("convex: bm25 #1 score ")
    assert len(results) <= 3 and list(results) == results.hits
    assert "signing" not in repr(top), "reprs show ids, not content"


def test_search_filters_and_fusions(vault, notes):
    vault.ingest(notes / "ops", tags={"team": "ops"})
    vault.ingest(notes / "garden.txt")
    ops = vault.search("backups machine", mode="bm25", tags={"team": "ops"})
    assert ops.hits and all(h.source.endswith("backup.md") for h in ops.hits)
    assert vault.search("tomatoes", mode="bm25", tags={"team": "ops"}).hits == []
    rrf = vault.search("tomatoes", mode="bm25", fusion="rrf")
    assert rrf.fusion == "rrf" and rrf.hits[0].source.endswith("garden.txt")


def test_hybrid_without_a_model_says_so(vault, notes):
    vault.ingest(notes)
    results = vault.search("backups", mode="hybrid")
    assert results.signals == ["bm25", "structure"]
    assert any("semantic ranking is off" in n for n in results.notes)
    assert results.hits[0].source.endswith("backup.md")
    assert "semantic" not in results.explain()[0]


def test_bad_search_input(vault, notes):
    vault.ingest(notes)
    with pytest.raises(p3ak.InvalidInputError,
                       match=r"^unknown mode `fuzzy` \(bm25, semantic, hybrid\)$"):
        vault.search("x", mode="fuzzy")
    with pytest.raises(p3ak.InvalidInputError, match=r"^unknown fusion `max` \(convex, rrf\)$"):
        vault.search("x", fusion="max")
    with pytest.raises(p3ak.InvalidInputError, match="^k must be at least 1$"):
        vault.search("x", k=0)
    with pytest.raises(p3ak.InvalidInputError, match="^the query has no words to search for$"):
        vault.search("  ", mode="bm25")
    with pytest.raises(p3ak.InvalidInputError,
                       match=r"^semantic search needs the embedding model: "
                             r"run `p3ak models install`$"):
        vault.search("keys", mode="semantic")


def test_delete_removes_from_the_index(vault, notes):
    report = vault.ingest(notes / "garden.txt")
    doc_id = report.files[0]["id"]
    assert vault.search("tomatoes", mode="bm25").hits
    vault.delete(doc_id)
    assert vault.search("tomatoes", mode="bm25").hits == []


# --- with the embedding model -------------------------------------------------------------


def test_semantic_and_hybrid_search(model_home, tmp_path, notes):
    assert p3ak.model_installed() is not None
    assert p3ak.models_dir() == model_home / "models"
    with p3ak.create(tmp_path / "m.vault", "another passphrase") as vault:
        report = vault.ingest(notes)
        assert report.embedding["pending"] == 0 and report.embedding["embedded"] >= 3
        assert vault.status()["status"]["pending_chunks"] == 0

        # No shared words with the document: only the embeddings can find it.
        semantic = vault.search("vegetable growing advice", mode="semantic", k=3)
        assert semantic.signals == ["semantic"]
        assert semantic.hits[0].source.endswith("garden.txt")
        assert 0 < semantic.hits[0].signal("semantic").score <= 1

        hybrid = vault.search("how often are keys rotated", mode="hybrid", k=3)
        assert sorted(hybrid.signals) == ["bm25", "semantic", "structure"]
        assert hybrid.notes == []
        assert hybrid.hits[0].source.endswith("rotation.md")
        assert "| semantic #" in hybrid.explain()[0]
        assert hybrid.timing_ms["query_embedding"] > 0


def test_put_then_embed(model_home, tmp_path):
    with p3ak.create(tmp_path / "m.vault", "another passphrase") as vault:
        vault.put("Sourdough starter needs flour and water every day.")
        assert vault.status()["status"]["pending_chunks"] >= 1
        assert vault.embed() >= 1
        assert vault.status()["status"]["pending_chunks"] == 0
        assert vault.search("bread baking", mode="semantic").hits


def test_one_vault_from_many_threads(vault, notes):
    """Calls run without the GIL and each opens the vault for itself: threads may share one
    Vault, readers side by side and writers one after another."""
    import threading

    vault.ingest(notes)
    failures: list = []
    found: list = []

    def reader() -> None:
        try:
            for _ in range(5):
                found.append(len(vault.search("backups", mode="bm25").hits))
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    def writer(n: int) -> None:
        try:
            vault.put(f"note number {n}", tags={"writer": str(n)})
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    threads += [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == [] and len(found) == 20 and min(found) >= 1
    assert len(vault.list()) == 6
