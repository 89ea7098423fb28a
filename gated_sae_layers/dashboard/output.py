"""The report's folder: it never overwrites or deletes a file it did not write.

A dashboard writes exactly `FILES` into its folder. Before any work, each
of them must be absent, or, with `overwrite=True`, a regular file (not a
link) that an earlier dashboard wrote; any other file of that name stops
the call with `FileExistsError`, with `overwrite` or without. Every other
file in the folder is left alone. A file is written to a temporary name in
the folder and renamed into place, so a reader never sees half a report.

"An earlier dashboard wrote it" is not a guess from the text: each report
gets a random 128-bit id (`new_report_id`), written in `index.html` as the
`<meta name="gated-sae-layers-report">` line right after the generator line
at the top of the page, and as `report_id` in `summary.json` beside
`"generator": MARKER`. A file is taken as a dashboard's only where both files
are there and carry the same id (`written_by_a_dashboard`): a page that
merely mentions `gated_sae_layers.dashboard`, a hand-made `summary.json`, or
a page beside another report's summary is kept. (`gated_sae_layers_cli.outputs`
repeats `FILES`, `MARKER` and this check for the command line's early check.)
"""

import json
import os
import pathlib
import re
import secrets
import tempfile

INDEX, SUMMARY = "index.html", "summary.json"
FILES = (INDEX, SUMMARY)
MARKER = "gated_sae_layers.dashboard"
# The first lines of every report page, the id in the last (`html.TEMPLATE`).
PAGE_HEAD = ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             f'<meta name="generator" content="{MARKER}">\n'
             '<meta name="gated-sae-layers-report" content="{report_id}">\n')
_PAGE_ID = re.compile(re.escape(PAGE_HEAD).replace(
    re.escape("{report_id}"), "([0-9a-f]{32})").encode())
_ID = re.compile("[0-9a-f]{32}")
# A summary is a few kB per thousand latents; a larger file is no summary.
_SUMMARY_LIMIT = 64 << 20


def new_report_id():
    """A fresh random report id: 32 lowercase hex digits."""
    return secrets.token_hex(16)


def report_id_of(value):
    """`value` if it is a report id (32 lowercase hex digits), else raises."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError("A report id must be 32 lowercase hex digits (see "
                         f"`new_report_id`). Received: {value!r:.100}")
    return value


def report_id(path):
    """The report id that `path` (a report's `index.html` or `summary.json`)
    carries where a dashboard writes it, or `None`.

    Example:

    >>> import tempfile
    >>> page = pathlib.Path(tempfile.mkdtemp()) / "index.html"
    >>> _ = page.write_text("<p>made with gated_sae_layers.dashboard</p>")
    >>> report_id(page) is None
    True
    """
    path = pathlib.Path(path)
    if path.is_symlink() or not path.is_file():
        return None
    if path.name == INDEX:
        with open(path, "rb") as handle:
            match = _PAGE_ID.match(handle.read(len(PAGE_HEAD) + 64))
        return match.group(1).decode() if match else None
    if path.name == SUMMARY and path.stat().st_size <= _SUMMARY_LIMIT:
        try:
            summary = json.loads(path.read_bytes())
        except (ValueError, RecursionError):  # not JSON, or nested past the stack
            return None
        if isinstance(summary, dict) and summary.get("generator") == MARKER:
            found = summary.get("report_id")
            if isinstance(found, str) and _ID.fullmatch(found):
                return found
    return None


def written_by_a_dashboard(path):
    """True if `path` is a report file (`FILES`) that a dashboard wrote: it
    and the other report file beside it carry the same report id."""
    path = pathlib.Path(path)
    if path.name not in FILES:
        return False
    ids = [report_id(path.parent / name) for name in FILES]
    return ids[0] is not None and ids[0] == ids[1]


def check_output_dir(output_dir, overwrite=False):
    """`output_dir` as a `Path`, checked writable by the rule above.

    Args:
        output_dir: the report's folder (created later if needed).
        overwrite: bool, whether a report that an earlier dashboard wrote
            there may be replaced.

    Example:

    >>> import tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "index.html").write_text("my own page")
    >>> check_output_dir(folder, overwrite=True)
    Traceback (most recent call last):
    ...
    FileExistsError: ...
    """
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(
            "`output_dir` must be a folder path (str or pathlib.Path). "
            f"Received: output_dir={output_dir!r:.100}")
    if not str(os.fspath(output_dir)).strip():
        raise ValueError(
            "`output_dir` must be a folder path, not an empty one (pass '.' for the "
            f"current folder). Received: output_dir={output_dir!r}")
    if not isinstance(overwrite, bool):
        raise TypeError(
            f"`overwrite` must be True or False. Received: overwrite={overwrite!r}")
    folder = pathlib.Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"`output_dir` must be a folder. Received: output_dir={folder}, a file")
    present = [folder / name for name in FILES
               if (folder / name).exists() or (folder / name).is_symlink()]
    for path in present:
        if not written_by_a_dashboard(path):
            raise FileExistsError(
                f"`output_dir` already holds {path}, which no feature dashboard "
                "wrote; it is left untouched. Choose another `output_dir`, or move "
                f"that file. Received: output_dir={folder}")
    if present and not overwrite:
        raise FileExistsError(
            f"`output_dir` already holds a feature dashboard "
            f"({', '.join(path.name for path in present)}). Pass `overwrite=True` to "
            "replace it (other files there are left alone), or choose another "
            f"`output_dir`. Received: output_dir={folder}")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"`output_dir`: cannot write into {existing}.")
    return folder


def write_file(folder, name, text):
    """Writes `text` to `folder/name` atomically (a temporary file, renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, folder / name)
    except BaseException:
        os.unlink(temporary)
        raise
    return folder / name
