"""The report's folder: it never overwrites or deletes a file it did not write.

A dashboard writes exactly `FILES` into its folder. Before any work, each
of them must be absent, or, with `overwrite=True`, a regular file (not a
link) that an earlier dashboard wrote (its first bytes hold `MARKER`); any
other file of that name stops the call with `FileExistsError`, with
`overwrite` or without. Every other file in the folder is left alone. A
file is written to a temporary name in the folder and renamed into place,
so a reader never sees half a report. (`gated_sae_layers_cli._outputs`
repeats `FILES` and `MARKER` for the command line's early check.)
"""

import os
import pathlib
import tempfile

INDEX, SUMMARY = "index.html", "summary.json"
FILES = (INDEX, SUMMARY)
MARKER = "gated_sae_layers.dashboard"


def _written_by_a_dashboard(path):
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as handle:
        return MARKER.encode() in handle.read(4096)


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
        if not _written_by_a_dashboard(path):
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
