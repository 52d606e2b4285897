"""The vault: create/open, documents, errors with the CLI's messages, secrets out of reprs."""

from __future__ import annotations

import threading
import time

import pytest

import p3ak
from conftest import PASSPHRASE


def test_put_get_list_delete(vault):
    text_id = vault.put("the quick brown fox", title="fox", tags={"kind": "note"})
    bytes_id = vault.put(b"\x00\x01binary", title="blob")
    assert len(text_id) == 32 and text_id != bytes_id
    assert vault.put("the quick brown fox") == text_id, "same content, same document"

    doc = vault.get(text_id)
    assert doc.text == "the quick brown fox" and doc.title == "fox"
    assert doc.tags == {"kind": "note"} and doc.size == 19
    assert vault.get(bytes_id[:8]).content == b"\x00\x01binary", "a unique prefix will do"

    assert {d.id for d in vault.list()} == {text_id, bytes_id}
    assert [d.id for d in vault.list("FOX")] == [text_id], "title match, case-insensitive"
    assert [d.id for d in vault.list(tags={"kind": "note"})] == [text_id]
    assert vault.list("nothing like it") == []

    assert vault.delete(text_id[:6]) == text_id
    assert [d.id for d in vault.list()] == [bytes_id]
    with pytest.raises(p3ak.NotFoundError, match=f"^no document `{text_id}`$"):
        vault.get(text_id)


def test_put_file(vault, tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("quarterly numbers")
    doc = vault.get(vault.put_file(path, tags={"q": "3"}))
    assert (doc.text, doc.title, doc.source, doc.tags) == (
        "quarterly numbers", "report.txt", "report.txt", {"q": "3"})
    missing = tmp_path / "missing.txt"
    with pytest.raises(p3ak.NotFoundError) as error:
        vault.put_file(missing)
    assert str(error.value) == f"cannot read `{missing}`: No such file or directory (os error 2)"


def test_reopen_with_the_passphrase(home, tmp_path):
    path = tmp_path / "v.vault"
    with p3ak.Vault.create(path, PASSPHRASE) as v:
        doc_id = v.put("kept")
    with p3ak.open(path, PASSPHRASE) as v:
        assert v.get(doc_id).text == "kept"
        assert v.info()["documents"] == 1
        assert v.info()["encryption"] != "none"


def test_wrong_passphrase(home, tmp_path):
    path = tmp_path / "v.vault"
    p3ak.create(path, PASSPHRASE).close()
    with pytest.raises(p3ak.WrongPassphraseError) as error:
        p3ak.open(path, "not the passphrase")
    assert str(error.value) == "wrong passphrase or damaged header"
    assert isinstance(error.value, p3ak.P3akError)
    assert "not the passphrase" not in repr(error.value)


def test_errors_carry_the_cli_messages(vault, tmp_path):
    with pytest.raises(p3ak.P3akError, match=r"^`.*test\.vault` already exists$"):
        p3ak.create(vault.path, PASSPHRASE)
    with pytest.raises(p3ak.InvalidInputError,
                       match=r"^invalid document id `xyz`: expected 4 to 32 hexadecimal digits$"):
        vault.get("xyz")
    with pytest.raises(p3ak.InvalidInputError, match=r"^invalid tag `a=b=c`: keys must be 1 to 128 characters"):
        vault.put("x", tags={"a=b": "c"})
    with pytest.raises(p3ak.P3akError, match="a passphrase is needed"):
        p3ak.open(vault.path)
    with pytest.raises(p3ak.P3akError) as error:
        p3ak.open(tmp_path / "nowhere.vault", PASSPHRASE)
    assert "nowhere.vault" in str(error.value)


def test_unencrypted_vault_only_when_asked(home, tmp_path):
    plain = tmp_path / "plain.vault"
    with p3ak.create(plain, unencrypted=True) as v:
        doc_id = v.put("public")
        assert v.info()["encryption"] == "none"
    with pytest.raises(p3ak.InvalidInputError, match="is not encrypted, and it was left untouched"):
        p3ak.open(plain, PASSPHRASE)
    with p3ak.open(plain, unencrypted=True) as v:
        assert v.get(doc_id).text == "public"
    secret = tmp_path / "secret.vault"
    p3ak.create(secret, PASSPHRASE).close()
    with pytest.raises(p3ak.InvalidInputError, match="is encrypted: give its passphrase"):
        p3ak.open(secret, unencrypted=True)
    with pytest.raises(p3ak.InvalidInputError, match="a passphrase and `unencrypted=True`"):
        p3ak.create(tmp_path / "both.vault", PASSPHRASE, unencrypted=True)


def test_the_passphrase_never_shows(home, tmp_path):
    path = tmp_path / "v.vault"
    v = p3ak.create(path, PASSPHRASE)
    shown = [repr(v), str(v), repr(v._native), str(v._native), repr(v.info()), repr(v.status())]
    doc_id = v.put("text")
    shown += [repr(v.get(doc_id)), repr(v.list()), repr(v.log())]
    for text in shown:
        assert PASSPHRASE not in text
    assert repr(v) == f"<p3ak.Vault path={str(path)!r}>"
    assert repr(v.get(doc_id)) == f"Document(id='{doc_id}')", "ids only: no content or title"
    assert not hasattr(v, "__dict__"), "nowhere to keep a passphrase"
    v.close()
    assert repr(v) == f"<p3ak.Vault path={str(path)!r} closed>"


def test_context_manager_closes(home, tmp_path):
    with p3ak.create(tmp_path / "v.vault", PASSPHRASE) as v:
        assert not v.closed
    assert v.closed
    with pytest.raises(p3ak.ClosedError, match=r"^the vault `.*v\.vault` is closed$"):
        v.list()
    v.close()  # twice is fine


def test_info_and_status(vault):
    vault.put("indexed text")
    info = vault.info()
    assert info["documents"] == 1 and info["path"] == str(vault.path)
    status = vault.status()
    assert status["model_installed"] is False and p3ak.model_installed() is None
    assert status["status"]["documents"] == 1 and status["status"]["indexed_documents"] == 1


def test_audit_log_records_what_was_done(vault):
    doc_id = vault.put("logged")
    vault.delete(doc_id)
    entries = vault.log()
    assert [e.kind for e in entries] == [
        "vault.create", "vault.put", "memory.index", "vault.delete"]
    assert entries[1].payload["id"] == doc_id and entries[3].payload["id"] == doc_id
    assert [e.seq for e in entries] == list(range(len(entries)))
    assert all(e.actor.startswith("python uid=") for e in entries[1:]), "who did it"
    assert vault.log(1) == entries[-1:]
    assert entries[1].prev != "0" * 64, "a hash chain"


def test_verify_intact_and_damaged(vault):
    vault.put("some content to check")
    report = vault.verify()
    assert report.ok and report.problems == [] and report.logged
    assert report.documents == 1 and report.log_entries >= 2
    assert vault.log()[-1].kind == "vault.verify"

    # Flip one byte inside the records: the authentication fails, and verify says where.
    data = bytearray(vault.path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    vault.path.write_bytes(bytes(data))
    with pytest.raises(p3ak.DamagedError) as error:
        vault.verify()
    assert str(error.value).startswith("vault is damaged")
    report = error.value.report
    assert not report.ok and "failed authentication" in report.problems[0]
    assert str(error.value) == f"vault is damaged: {report.problems[0]}" + (
        f" (and {len(report.problems) - 1} more problems)" if len(report.problems) > 1 else "")


def test_open_releases_the_gil(home, tmp_path):
    """Argon2id runs without the GIL: another thread keeps running meanwhile."""
    path = tmp_path / "v.vault"
    p3ak.create(path, PASSPHRASE).close()
    window: list[float] = []
    ticks: list[float] = []

    def opener() -> None:
        window.append(time.monotonic())
        p3ak.open(path, PASSPHRASE).close()
        window.append(time.monotonic())

    thread = threading.Thread(target=opener)
    thread.start()
    while thread.is_alive():
        ticks.append(time.monotonic())
    thread.join()
    start, end = window
    inside = [t for t in ticks if start + (end - start) * 0.2 < t < end - (end - start) * 0.2]
    assert len(inside) > 100, f"{len(inside)} ticks in {end - start:.3f} s of Argon2id"


def test_versions_agree():
    from p3ak import _native

    assert p3ak.__version__ == _native.__version__, "pyproject takes the Cargo version"


def test_embed_needs_a_model(vault):
    vault.put("pending chunks")
    with pytest.raises(p3ak.InvalidInputError,
                       match=r"^no embedding model is installed: run `p3ak models install`$"):
        vault.embed()


def test_the_constructor_points_to_open_and_create(tmp_path):
    with pytest.raises(TypeError, match=r"p3ak\.open\(path, passphrase\)"):
        p3ak.Vault(tmp_path / "v.vault")  # type: ignore[arg-type]


def test_a_passphrase_in_a_bytearray_can_be_wiped(home, tmp_path):
    path = tmp_path / "v.vault"
    secret = bytearray(PASSPHRASE.encode())
    with p3ak.create(path, secret) as v:
        secret[:] = bytes(len(secret))  # wiped: the vault keeps only the derived key
        doc_id = v.put("still usable")
        assert v.get(doc_id).text == "still usable"
    with p3ak.open(path, PASSPHRASE.encode()) as v:
        assert v.get(doc_id).text == "still usable"
    with pytest.raises(p3ak.WrongPassphraseError):
        p3ak.open(path, bytearray(b"wrong"))
    with pytest.raises(p3ak.InvalidInputError, match="^the passphrase is not UTF-8$"):
        p3ak.open(path, b"\xff\xfe")
