"""`jupyter keyvault scan PATH… [--fix]`: find and redact secrets in notebooks and files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

GITHUB_TOKEN = "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"


def run(args, env, input_text=None):
    return subprocess.run([sys.executable, "-m", "jupyter_keyvault.cli", *args], env=env, input=input_text,
                          capture_output=True, text=True, timeout=120)


def isolated_env(tmp_path, master_key):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    env.update({"HOME": str(tmp_path / "home"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
                "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "KEYVAULT_MASTER_KEY": master_key})
    return env


def make_repo(root: Path, stored: str) -> None:
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    leaky = nbformat.v4.new_code_cell(f"token = '{GITHUB_TOKEN}'")
    shown = nbformat.v4.new_code_cell("print(key)")
    shown.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{stored}\n")]
    nb.cells = [leaky, shown, nbformat.v4.new_code_cell("import sklearn  # sk-learn task-12345")]
    nbformat.write(nb, root / "analysis.ipynb")
    (root / "config.py").write_text(f"API = '{stored}'\nDEBUG = True\n")
    (root / "clean.md").write_text("sklearn, sk-learn and 550e8400-e29b-41d4-a716-446655440000 are fine\n")
    (root / ".git").mkdir()
    (root / ".git" / "ignored").write_text(GITHUB_TOKEN)


def test_given_a_repo_with_leaks_when_scanned_then_each_is_reported_by_label_and_the_exit_status_is_1(tmp_path, master_key, canary):
    env = isolated_env(tmp_path, master_key)
    assert run(["set", "OPENAI_API_KEY"], env, canary).returncode == 0
    make_repo(tmp_path / "repo", canary)
    out = run(["scan", str(tmp_path / "repo")], env)
    assert out.returncode == 1
    assert f"{tmp_path / 'repo' / 'analysis.ipynb'}: cell 1 source: github" in out.stdout
    assert "analysis.ipynb: 1 output(s) contain a secret" in out.stdout
    assert f"{tmp_path / 'repo' / 'config.py'}:1: OPENAI_API_KEY" in out.stdout  # known value, by its name
    assert "clean.md" not in out.stdout and ".git" not in out.stdout
    assert canary not in out.stdout + out.stderr and GITHUB_TOKEN not in out.stdout + out.stderr
    assert out.stderr.strip().startswith("jupyter keyvault: error: found")


def test_given_leaks_when_scanned_with_fix_then_files_are_redacted_in_place_and_a_rescan_is_clean(tmp_path, master_key, canary):
    env = isolated_env(tmp_path, master_key)
    run(["set", "OPENAI_API_KEY"], env, canary)
    repo = tmp_path / "repo"
    make_repo(repo, canary)
    os.chmod(repo / "config.py", 0o640)
    fixed = run(["scan", str(repo), "--fix"], env)
    assert fixed.returncode == 0, fixed.stderr
    for path in (repo / "analysis.ipynb", repo / "config.py"):
        text = path.read_text()
        assert canary not in text and GITHUB_TOKEN not in text
    assert "[REDACTED:OPENAI_API_KEY]" in (repo / "config.py").read_text()
    assert (repo / "config.py").stat().st_mode & 0o777 == 0o640
    nb = nbformat.read(repo / "analysis.ipynb", as_version=4)
    assert nb.cells[2].source == "import sklearn  # sk-learn task-12345"
    again = run(["scan", str(repo)], env)
    assert again.returncode == 0 and "No secrets found." in again.stdout


def test_given_no_vault_when_scanned_then_patterns_still_work_and_no_vault_is_created(tmp_path, master_key):
    env = isolated_env(tmp_path, master_key)
    (tmp_path / "notes.txt").write_text(f"token: {GITHUB_TOKEN}\n")
    out = run(["scan", str(tmp_path / "notes.txt")], env)
    assert out.returncode == 1 and "notes.txt:1: github" in out.stdout
    assert not (tmp_path / "data" / "keyvault").exists()
    missing = run(["scan", str(tmp_path / "nope")], env)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no such file" in missing.stderr
