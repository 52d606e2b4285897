"""The README's example script runs as written: ingest a folder, search it, verify."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- example: search_folder\.py.*?-->\n```python\n(.*?)```", text, re.S)
    assert match, "the README's example block"
    return match.group(1)


def run(script: Path, folder: Path, cwd: Path, home: Path) -> str:
    env = dict(os.environ, P3AK_PASSPHRASE="readme passphrase", P3AK_HOME=str(home))
    done = subprocess.run([sys.executable, str(script), str(folder)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_example_without_the_model(tmp_path, notes, home):
    script = tmp_path / "search_folder.py"
    script.write_text(example())
    out = run(script, notes, tmp_path, home)
    assert "ingested 3, unchanged 0, failed 0" in out
    assert "note: semantic ranking is off" in out
    assert "Backups" in out and "[backups]" in out.lower()
    assert "verified: True" in out
    # A second run opens the vault it made and finds everything unchanged.
    assert "ingested 0, unchanged 3, failed 0" in run(script, notes, tmp_path, home)


def test_readme_example_with_the_model(tmp_path, notes, model_home):
    script = tmp_path / "search_folder.py"
    script.write_text(example())
    out = run(script, notes, tmp_path, model_home)
    assert "ingested 3" in out and "note:" not in out
    assert "| semantic #" in out


ROOT_README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_projects_readme_example_runs(tmp_path, notes, home):
    import textwrap

    text = ROOT_README.read_text()
    match = re.search(r"<!-- example: quick_search\.py.*?-->\n(\s*)```python\n(.*?)\n\s*```",
                      text, re.S)
    assert match, "the project README's Python example"
    script = tmp_path / "quick_search.py"
    script.write_text(textwrap.dedent(match.group(2)))
    out = run(script, notes, tmp_path, home)
    assert "ingested 3, failed 0" in out
    assert "Backups" in out
    assert "bm25 #" in out, out  # the explanation line names each signal's rank
