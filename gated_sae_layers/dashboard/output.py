"""The report's folder: it never overwrites or deletes a file it did not write.

A dashboard writes exactly `FILES` into its folder. Before any work, each
of them must be absent, or a regular file (not a link) that an earlier
dashboard wrote (its first bytes hold `MARKER`); any other file of that
name stops the call with `FileExistsError`. Every other file in the folder
is left alone. A file is written to a temporary name in the folder and
renamed into place, so a reader never sees half a report.
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


def check_output_dir(output_dir):
    """`output_dir` as a `Path`, checked writable by the rule above.

    Example:

    >>> import tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "index.html").write_text("my own page")
    >>> check_output_dir(folder)
    Traceback (most recent call last):
    ...
    FileExistsError: ...
    """
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(
            "`output_dir` must be a folder path (str or pathlib.Path). "
            f"Received: output_dir={output_dir!r:.100}")
    folder = pathlib.Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"`output_dir` must be a folder. Received: output_dir={folder}, a file")
    for name in FILES:
        path = folder / name
        if (path.exists() or path.is_symlink()) and not _written_by_a_dashboard(path):
            raise FileExistsError(
                f"`output_dir` already holds {path}, which no feature dashboard "
                "wrote; it is left untouched. Choose another `output_dir`, or move "
                f"that file. Received: output_dir={folder}")
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
