"""Paths a command reads and writes, checked before any work, standard library only.

The one output rule: an output that exists is refused unless `--overwrite`
is given (an empty folder is no output yet). With `--overwrite` it is
replaced safely: the new one is written whole under a temporary name (beside
it, or inside a report folder) and renamed into place, so it is never half
written and a failed run leaves the old one as it was. A file the command
did not write is never deleted or replaced, with `--overwrite` or without: a
store folder is replaced only when it holds nothing but the store's files,
and a report or export folder keeps every other file. And an output is never
one of the command's inputs, nor inside an input folder such as a store
(`check_not_an_input`, with `--overwrite` or without).

The file names below are those of `gated_sae_layers` (`activations.store`,
`dashboard.output`, `interop.saelens`), repeated here so that checking them
imports nothing heavy; `tests/test_cli_outputs.py` holds them equal.
"""

import contextlib
import fcntl
import os
import importlib.util
import pathlib
import re
import secrets
import shutil

MANIFEST, STORE_LOCK = "manifest.json", "writer.lock"
_STORE_FILE = re.compile(
    r"(manifest\.json|writer\.lock|shard_\d{5}\.npy)(\.\d+\.[0-9a-f]{8}\.tmp)?\Z")
DASHBOARD_FILES = ("index.html", "summary.json")
SAELENS_FILES = ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors")


# ------------------------------------------------------------ inputs
def check_input_file(path, option):
    """`path`, given with `option`, is an existing file."""
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"`{option}`: no file at {path}.")


def check_keras_file(path, option="MODEL.keras"):
    """`path` names an existing `.keras` file."""
    if pathlib.Path(path).suffix != ".keras" or not pathlib.Path(path).is_file():
        raise FileNotFoundError(
            f"`{option}` must be an existing .keras file. Received: {path}")


def check_store_folder(path, option="--store"):
    """`path` is an activation store folder (it holds a manifest)."""
    if not (pathlib.Path(path) / MANIFEST).is_file():
        raise FileNotFoundError(
            f"`{option}`: no activation store ({MANIFEST}) at {path}.")


# ------------------------------------------------------------ outputs
def _resolved(path):
    return pathlib.Path(os.path.realpath(path))


def _same(a, b):
    """`a` and `b` (resolved) name the same file or folder: equal paths, or,
    where both exist, the same file (a hard link, a bind mount)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _within(path, folder):
    """`path` (resolved) is `folder` (resolved) or lies inside it."""
    return any(_same(parent, folder) for parent in (path, *path.parents))


def check_not_an_input(option, output, inputs, names=None):
    """The one rule between outputs and inputs: a command never writes over
    what it reads, nor into a folder it reads.

    Paths are compared resolved (symbolic links followed), and with
    `os.path.samefile` where both exist (hard links).

    Args:
        option: how the output is given, such as `"--json"`; named in errors.
        output: the file the command writes; or, with `names`, the folder
            it writes the files `names` into; or, with `names=None` and a
            folder, the folder it owns whole (a store it may replace).
        inputs: `{option: path}` of the files and folders the command reads
            (None values are skipped). A folder counts with everything in it.
        names: the names of the files written into the folder `output`, or
            None (see `output`).

    Raises:
        ValueError: the output is an input, lies in an input folder, or
            (with `names=None`) holds an input.
    """
    given = pathlib.Path(output)
    output = _resolved(given)
    written = ([(given, output)] if names is None
               else [(given / name, output / name) for name in names])
    for label, source in inputs.items():
        if source is None:
            continue
        source_path = _resolved(source)
        for shown, path in written:
            if _same(path, source_path):
                raise ValueError(
                    f"`{option}` must not be an input of the command: {shown} is "
                    f"{label}, which it reads. Choose another path. Received: "
                    f"{option}={given}")
        if source_path.is_dir() and _within(output, source_path):
            raise ValueError(
                f"`{option}` must not be inside {label} ({source}): the command reads "
                f"that folder. Choose another path. Received: {option}={given}")
        if names is None and output.is_dir() and _within(source_path, output):
            raise ValueError(
                f"`{option}` would replace the folder that holds {label} ({source}), "
                "which the command reads. Choose another folder, or move that file. "
                f"Received: {option}={given}")


def check_folder(folder, option):
    """`folder` exists and this process may create and rename files in it."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"`{option}`: the folder {folder} does not exist. Create it first.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"`{option}`: cannot write into the folder {folder}.")


def _exists(path):
    return path.exists() or path.is_symlink()


def check_output_file(path, option, overwrite, suffix=None):
    """`path` may be written: a file name (ending in `suffix`) in an existing
    folder, absent unless `overwrite`."""
    path = pathlib.Path(path)
    if suffix is not None and path.suffix != suffix:
        raise ValueError(
            f"`{option}` must be a file name ending in {suffix}. Received: {option}={path}")
    if path.is_dir():
        raise IsADirectoryError(
            f"`{option}` must be a file, not a folder. Received: {option}={path}")
    if _exists(path) and not overwrite:
        raise FileExistsError(
            f"`{option}`: {path} already exists. Pass --overwrite to replace it, or "
            "choose another name.")
    check_folder(path.parent, option)


def check_output_folder(folder, option, names, overwrite, replaceable=None,
                        not_ours="this command did not write it"):
    """`folder` may receive the files `names`: it is absent or a folder, and
    each of `names` in it is absent, or (with `overwrite`) a file that
    `replaceable(path)` accepts (`not_ours` says why another is refused).
    Other files in it are never touched."""
    folder = pathlib.Path(folder)
    if _exists(folder) and not folder.is_dir():
        raise NotADirectoryError(
            f"`{option}` must be a folder. Received: {option}={folder}, a file")
    existing = [folder / name for name in names if _exists(folder / name)]
    for path in existing:
        if replaceable is not None and not replaceable(path):
            raise FileExistsError(
                f"`{option}`: {path} exists and {not_ours}; it is left untouched, even "
                "with --overwrite. Choose another folder, or move that file.")
    if existing and not overwrite:
        raise FileExistsError(
            f"`{option}`: {folder} already holds {', '.join(p.name for p in existing)}. "
            "Pass --overwrite to replace them (other files there are left alone), or "
            "choose another folder.")
    check_folder(folder if folder.is_dir() else folder.parent, option)


def _dashboard_output():
    """`gated_sae_layers/dashboard/output.py`, loaded by path: it uses only
    the standard library, and importing it as `gated_sae_layers.dashboard.output`
    would run the package's `__init__` (Keras, TensorFlow)."""
    global _DASHBOARD_OUTPUT
    if _DASHBOARD_OUTPUT is None:
        path = (pathlib.Path(__file__).resolve().parent.parent / "gated_sae_layers"
                / "dashboard" / "output.py")
        spec = importlib.util.spec_from_file_location("_gsl_dashboard_output", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _DASHBOARD_OUTPUT = module
    return _DASHBOARD_OUTPUT


_DASHBOARD_OUTPUT = None


def written_by_a_dashboard(path):
    """The dashboard's own rule (`gated_sae_layers.dashboard.output`): a report
    file whose partner beside it carries the same report id."""
    return _dashboard_output().written_by_a_dashboard(path)


def check_store_out(out, resume, overwrite):
    """`--out` of `harvest`: a new or empty folder, or an existing store to
    continue (`resume`) or replace (`overwrite`, if it holds only the store's
    files and no other process is writing it)."""
    out = pathlib.Path(out)
    if not _exists(out):
        check_folder(out.parent, "--out")
        return
    if not out.is_dir():
        raise NotADirectoryError(
            f"`--out` must be a folder for the store. Received: --out={out}, a file")
    if not (out / MANIFEST).exists():
        others = _foreign_files(out)
        if others:
            raise FileExistsError(
                f"`--out`: {out} holds other files ({others}) and no store. A store needs "
                "a folder of its own: choose a new or empty folder.")
    elif resume:
        pass
    elif not overwrite:
        raise FileExistsError(
            f"A store already exists at {out}. Pass --resume to continue it, --overwrite "
            "to replace it, or choose another folder.")
    else:
        _check_store_only(out)
        os.close(_lock_store(out))  # fail now, not after the harvest
        check_folder(out.parent, "--out")
    check_folder(out, "--out")


def _foreign_files(folder, limit=3):
    names = sorted(entry.name for entry in folder.iterdir()
                   if not _STORE_FILE.match(entry.name) or entry.is_dir())
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def _check_store_only(out):
    others = _foreign_files(out)
    if others:
        raise FileExistsError(
            f"`--out`: the store folder {out} also holds files that are not the store's "
            f"({others}); --overwrite never deletes them. Move them, or choose another "
            "folder.")


def _lock_store(out):
    """The descriptor of the store's writer lock, taken (as the store does)."""
    descriptor = os.open(out / STORE_LOCK,
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise BlockingIOError(
            f"Another process is writing the store at {out}: it holds "
            f"{out / STORE_LOCK}. Wait for it to finish or stop it before replacing "
            "the store.") from None
    return descriptor


# ------------------------------------------------------------ writing safely
def temporary_sibling(path, kind):
    """A hidden, unique name beside `path` (same folder, so a rename is atomic)."""
    return path.with_name(
        f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.{kind}{path.suffix}")


@contextlib.contextmanager
def replacing_file(path, overwrite):
    """Yields a temporary path beside `path` to write; renames it to `path`
    when the block ends without an error (else deletes it). Without
    `overwrite`, a `path` that appeared meanwhile is not replaced: the
    result is kept under the temporary name and a `FileExistsError` says
    where."""
    path = pathlib.Path(path)
    temporary = temporary_sibling(path, "partial")
    try:
        yield temporary
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if not overwrite and _exists(path):
        raise FileExistsError(
            f"{path} appeared while this command ran; it is left as it is. The "
            f"result is in {temporary}.")
    os.replace(temporary, path)


def write_text(path, text, overwrite):
    """Writes `text` to `path` through a temporary file."""
    with replacing_file(path, overwrite) as temporary:
        temporary.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def replacing_store(out):
    """Yields a temporary folder beside the store `out` to harvest into; when
    the block ends without an error, swaps it in and deletes the old
    store's files (it holds nothing else: checked again). The old store's
    writer lock is held throughout, so no other writer resumes it meanwhile.
    On an error the temporary folder is deleted and the old store is left
    as it was."""
    out = pathlib.Path(out).absolute()
    lock = _lock_store(out)
    temporary = temporary_sibling(out, "partial")
    try:
        yield temporary
        _check_store_only(out)
        old = temporary_sibling(out, "old")
        os.rename(out, old)
        try:
            os.rename(temporary, out)
        except BaseException:
            os.rename(old, out)
            raise
        for entry in old.iterdir():
            entry.unlink()
        old.rmdir()
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def replace_files(source, folder, names, overwrite, replaceable=None, **check):
    """Moves the files `names` from the folder `source` (on the same file
    system) into the existing `folder`, each by an atomic rename, checking
    `folder` again first (as `check_output_folder`); deletes `source`."""
    check_output_folder(folder, "--out", names, overwrite, replaceable, **check)
    folder = pathlib.Path(folder)
    for name in names:
        os.replace(pathlib.Path(source) / name, folder / name)
    shutil.rmtree(source)
