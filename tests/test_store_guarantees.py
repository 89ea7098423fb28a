"""What an `ActivationStore` promises against hostile or unlucky input: one
writer at a time, resumes only of the same source, finite values, shards
checked on every read, and nothing read from outside the store's folder."""

import json
import os
import subprocess
import sys
import tempfile

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

from gated_sae_layers.activations import ActivationStore, StoreCorruptionError, store_dataset
from gated_sae_layers.activations import store as store_module
from gated_sae_layers.activations.normalization import estimate_norm_scale
from gated_sae_layers.activations.store import StoreLockedError


def _rows(n, width=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, width)).astype("float32")


def _store(folder, rows=6, shard_rows=4, dtype="float32", **kwargs):
    store = ActivationStore.create(folder, 4, dtype=dtype, shard_rows=shard_rows, **kwargs)
    store.append(_rows(rows))
    store.close()
    return folder


def _edit_manifest(folder, edit):
    """Rewrites the manifest after `edit` changed it in place, or as the text
    `edit` where it is a string."""
    path = folder / "manifest.json"
    if isinstance(edit, str):
        path.write_text(edit)
        return
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


# ------------------------------------------------------------ item 5: resume
def test_resume_with_other_metadata_names_the_differing_keys(tmp_path):
    metadata = {"model": "m", "layer": "a", "texts": "stdlib"}
    store = ActivationStore.create(tmp_path, 4, shard_rows=4, metadata=metadata)
    store.append(_rows(5))
    store.update_metadata({"inputs_fingerprint": {"num_examples": 5}})
    store.abandon()
    with pytest.raises(ValueError, match=r"metadata differs in \['extra', 'layer'\]") as error:
        ActivationStore.create(tmp_path, 4, shard_rows=4, resume=True,
                               metadata={"model": "m", "layer": "b", "texts": "stdlib",
                                         "extra": 1})
    assert "'layer': 'a'" in str(error.value) and "'layer': 'b'" in str(error.value)
    with pytest.raises(ValueError, match=r"differs in \['layer', 'model', 'texts'\]"):
        ActivationStore.create(tmp_path, 4, shard_rows=4, resume=True)
    # The same metadata resumes (the harvest's fingerprint is checked by `harvest`).
    resumed = ActivationStore.create(tmp_path, 4, shard_rows=4, resume=True,
                                     metadata=dict(metadata))
    assert resumed.num_rows == 4 and resumed.metadata["inputs_fingerprint"]


def test_update_metadata_is_atomic_and_only_for_the_writer(tmp_path):
    store = ActivationStore.create(tmp_path, 4, metadata={"model": "m"})
    store.update_metadata({"note": [1, 2]})
    assert ActivationStore.open(tmp_path).metadata == {"model": "m", "note": [1, 2]}
    with pytest.raises(TypeError, match="JSON-serializable"):
        store.update_metadata({"bad": object()})
    with pytest.raises(TypeError, match="metadata"):
        ActivationStore.create(tmp_path / "other", 4, metadata=["not", "a", "dict"])
    with pytest.raises(ValueError, match="not open for writing"):
        ActivationStore.open(tmp_path).update_metadata({"x": 1})
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.update_metadata({"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json", "writer.lock"]  # no temporary file left


# ------------------------------------------------------------ item 6: float16 range
def test_float16_overflow_is_refused_after_the_cast(tmp_path):
    store = ActivationStore.create(tmp_path / "half", 4)  # float16, the default
    store.append(np.full((1, 4), 65504.0, "float32"))  # the largest float16 is fine
    with pytest.raises(ValueError, match=r'beyond the largest float16.*dtype="float32".*'
                                         r"normalize the activations"):
        store.append(np.array([[70000.0, 0, 0, 0]], "float32"))
    assert store.buffered_rows == 1
    with pytest.raises(TypeError, match="numbers"):
        store.append(np.array([["a"] * 4]))
    wide = ActivationStore.create(tmp_path / "full", 4, dtype="float32")
    wide.append(np.full((1, 4), 70000.0, "float32"))


@hypothesis.given(hnp.arrays("float32", st.tuples(st.integers(1, 3), st.just(4)),
                             elements=st.floats(-1e5, 1e5, width=32)))
def test_a_float16_store_keeps_exactly_the_cast_or_refuses(rows):
    """For any finite rows: stored exactly as their float16 cast, or refused
    when that cast overflows; never Inf on disk."""
    with tempfile.TemporaryDirectory() as folder:
        store = ActivationStore.create(folder, 4, shard_rows=2)
        if np.abs(rows).max() >= 65520:  # rounds to Inf in float16
            with pytest.raises(ValueError, match="float16"):
                store.append(rows)
            assert store.num_rows == store.buffered_rows == 0
            return
        store.append(rows)
        store.close()
        np.testing.assert_array_equal(ActivationStore.open(folder).read_all("float16"),
                                      rows.astype("float16"))


def _forge_shard(folder, array):
    """Writes `array` as the next shard with a matching manifest entry, as an
    older version (or anyone) could."""
    manifest = json.loads((folder / "manifest.json").read_text())
    name = f"shard_{len(manifest['shards']):05d}.npy"
    np.save(folder / name, array)
    with open(folder / name, "rb") as handle:
        digest = store_module._sha256(handle)
    manifest["shards"].append({"file": name, "rows": len(array), "sha256": digest})
    manifest["num_rows"] += len(array)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_norm_scale_and_stream_refuse_what_no_scale_fits(tmp_path):
    ActivationStore.create(tmp_path / "inf", 4).close()
    _forge_shard(tmp_path / "inf", np.full((2, 4), np.inf, "float16"))
    with pytest.raises(ValueError, match="NaN or Inf.*float32"):
        estimate_norm_scale(ActivationStore.open(tmp_path / "inf"))
    with pytest.raises(ValueError, match="no finite scale > 0"):
        estimate_norm_scale(np.full((2, 4), 1e-160))  # the scale overflows
    ActivationStore.create(tmp_path / "empty", 4).close()
    empty = ActivationStore.open(tmp_path / "empty")
    with pytest.raises(ValueError, match="no rows"):
        estimate_norm_scale(empty)
    with pytest.raises(ValueError, match="no rows"):
        store_dataset(empty, batch_size=2)


# ------------------------------------------------------------ item 10: every read
def test_a_shard_changed_on_disk_is_caught_on_a_later_read(tmp_path):
    store = ActivationStore.open(_store(tmp_path))
    shard = tmp_path / "shard_00000.npy"
    good = shard.read_bytes()
    store.read_shard(0)
    before = os.stat(shard)
    raw = bytearray(good)
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))  # same size, in place
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    with pytest.raises(StoreCorruptionError, match="shard_00000.npy.*checksum"):
        store.read_shard(0)
    shard.write_bytes(good)
    np.testing.assert_array_equal(store.read_shard(0), _rows(6)[:4])
    # A replacement with the old mtime restored is a new file: hashed again.
    forged = tmp_path / "forged"
    forged.write_bytes(bytes(raw))
    os.utime(forged, ns=(before.st_atime_ns, os.stat(shard).st_mtime_ns))
    os.replace(forged, shard)
    with pytest.raises(StoreCorruptionError, match="checksum"):
        store.read_shard(0)


def test_the_stream_verifies_changed_shards_in_later_epochs(tmp_path):
    store = ActivationStore.open(_store(tmp_path))
    dataset = store_dataset(store, batch_size=8, shuffle_buffer=1)
    assert sum(len(batch) for batch in dataset) == 6
    shard = tmp_path / "shard_00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    os.utime(shard, ns=(0, os.stat(shard).st_mtime_ns + 10**9))
    with pytest.raises(Exception, match="checksum"):
        list(dataset)


# ------------------------------------------------------------ item 11: paths
def _open_error(folder):
    with pytest.raises(StoreCorruptionError) as error:
        ActivationStore.open(folder)
    return str(error.value)


@pytest.mark.parametrize("name", ["../outside.npy", "{outside}", "/dev/zero",
                                  "shard_00001.npy", "shard_0.npy", 7, None])
def test_manifest_file_names_are_never_paths(tmp_path, name):
    np.save(tmp_path / "outside.npy", _rows(4))
    folder = _store(tmp_path / "store")
    name = name.format(outside=tmp_path / "outside.npy") if isinstance(name, str) else name

    def point_at(target):
        _edit_manifest(folder, lambda m: m["shards"][0].update(file=target))
        return _open_error(folder)

    message = point_at(name)
    assert "must be the file 'shard_00000.npy'" in message
    if isinstance(name, str) and "outside" in name:  # says nothing about what is there
        missing = name.replace("outside.npy", "missing.npy")
        assert point_at(missing).replace("missing", "outside") == message


def test_a_shard_must_be_a_regular_file_of_the_right_size(tmp_path):
    folder = _store(tmp_path / "store")
    shard = folder / "shard_00000.npy"
    good = shard.read_bytes()
    outside = tmp_path / "outside.npy"
    outside.write_bytes(good)  # the same bytes: only the link gives it away
    shard.unlink()
    shard.symlink_to(outside)
    assert "symbolic link" in _open_error(folder)
    shard.unlink()
    os.mkfifo(shard)  # would block a read forever
    assert "not a regular file" in _open_error(folder)
    shard.unlink()
    shard.write_bytes(good + b"more")
    assert f"has {len(good) + 4} bytes; the manifest implies {len(good)}" in _open_error(folder)
    shard.write_bytes(good)
    # A manifest without `bytes` (older stores): the size follows from the header.
    _edit_manifest(folder, lambda m: [s.pop("bytes") for s in m["shards"]])
    np.testing.assert_array_equal(ActivationStore.open(folder).read_all(), _rows(6))
    shard.write_bytes(good + b"more")
    assert "bytes; the manifest implies" in _open_error(folder)
    shard.write_bytes(good[:20])
    assert "cannot be read" in _open_error(folder)


def _set(key, value):
    return lambda m: m.update({key: value})


def _set_shard(**fields):
    return lambda m: m["shards"][0].update(fields)


MALFORMED = {
    "input_dim-str": _set("input_dim", "4"), "input_dim-bool": _set("input_dim", True),
    "input_dim-0": _set("input_dim", 0), "dtype-int8": _set("dtype", "int8"),
    "dtype-null": _set("dtype", None), "shard_rows-float": _set("shard_rows", 2.5),
    "shards-dict": _set("shards", {"0": 1}), "num_rows-wrong": _set("num_rows", 99),
    "metadata-list": _set("metadata", []),
    "progress-str": _set("progress", {"examples_done": "1"}),
    "complete-str": _set("complete", "yes"),
    "shard-not-dict": lambda m: m["shards"].append("shard_00002.npy"),
    "sha256-missing": lambda m: m["shards"][0].pop("sha256"),
    "sha256-short": _set_shard(sha256="00"), "rows-str": _set_shard(rows="4"),
    "rows-above-shard_rows": _set_shard(rows=5), "bytes-str": _set_shard(bytes="many"),
    "list": "[1, 2]", "string": '"text"', "null": "null",
    "format-only": '{"format": "gated_sae_layers.activation_store"}',
    **{f"{key}-missing": lambda m, key=key: m.pop(key) for key in (
        "format", "version", "input_dim", "dtype", "shard_rows", "metadata", "shards",
        "num_rows", "progress", "complete")},
}


@pytest.mark.parametrize("edit", MALFORMED.values(), ids=list(MALFORMED))
def test_a_malformed_manifest_is_a_clear_store_corruption_error(tmp_path, edit):
    folder = _store(tmp_path)
    _edit_manifest(folder, edit)
    assert "manifest" in _open_error(folder)


def test_the_manifest_itself_must_be_a_regular_file(tmp_path):
    folder = _store(tmp_path / "store")
    (tmp_path / "real.json").write_bytes((folder / "manifest.json").read_bytes())
    (folder / "manifest.json").unlink()
    (folder / "manifest.json").symlink_to(tmp_path / "real.json")
    assert "symbolic link" in _open_error(folder)
    (folder / "manifest.json").unlink()
    os.mkfifo(folder / "manifest.json")
    assert "not a regular file" in _open_error(folder)


# ------------------------------------------------------------ item 12: one writer
def test_one_writer_at_a_time_and_readers_need_no_lock(tmp_path):
    writer = ActivationStore.create(tmp_path, 4, shard_rows=2)
    writer.append(_rows(3))
    with pytest.raises(StoreLockedError, match="Another process.*is writing"):
        ActivationStore.create(tmp_path, 4, shard_rows=2, resume=True)
    assert ActivationStore.open(tmp_path).num_rows == 2  # reading needs no lock
    del writer  # garbage collection releases the lock (like a crash)
    second = ActivationStore.create(tmp_path, 4, shard_rows=2, resume=True)
    second.abandon()
    third = ActivationStore.create(tmp_path, 4, shard_rows=2, resume=True)
    with pytest.raises(ValueError, match="not open for writing"):
        second.append(_rows(1))
    third.close()
    # The lock file is no shard: the store reads back, and a new writer of a
    # complete store is refused for being complete, not locked.
    assert ActivationStore.open(tmp_path).num_shards == 1
    with pytest.raises(ValueError, match="complete"):
        ActivationStore.create(tmp_path, 4, shard_rows=2, resume=True)


def test_a_writer_in_another_process_holds_the_lock_until_killed(tmp_path):
    ActivationStore.create(tmp_path, 4).abandon()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; "
         "fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(120)", str(tmp_path / "writer.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError):
            ActivationStore.create(tmp_path, 4, resume=True)
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock
        holder.wait(timeout=30)
        holder.stdout.close()
    ActivationStore.create(tmp_path, 4, resume=True).close()


def test_temporary_files_are_named_for_the_process(tmp_path, monkeypatch):
    renamed = []
    replace = os.replace
    monkeypatch.setattr(store_module.os, "replace",
                        lambda source, target: renamed.append(str(source)) or replace(
                            source, target))
    _store(tmp_path, rows=5, shard_rows=2)
    assert len(renamed) == len(set(renamed)) > 3
    assert all(f".{os.getpid()}." in name and name.endswith(".tmp") for name in renamed)
    # What a killed writer left is deleted by the next one (it holds the lock).
    leftovers = ["shard_00003.npy.4242.0123abcd.tmp", "manifest.json.77.deadbeef.tmp"]
    ActivationStore.create(tmp_path / "killed", 4).abandon()
    for name in leftovers + ["notes.tmp"]:
        (tmp_path / "killed" / name).write_bytes(b"torn")
    ActivationStore.create(tmp_path / "killed", 4, resume=True).abandon()
    assert not any((tmp_path / "killed" / name).exists() for name in leftovers)
    assert (tmp_path / "killed" / "notes.tmp").exists()
    with pytest.raises(IndexError, match="index"):
        ActivationStore.open(tmp_path).read_shard(-1)
