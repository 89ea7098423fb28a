"""TensorFlow's and absl's native start-up log lines, kept off the terminal.

`TF_CPP_MIN_LOG_LEVEL=3` (set before TensorFlow is imported) silences
TensorFlow's C++ logging once it is set up, but not the lines that absl
writes to file descriptor 2 while TensorFlow's libraries load ("WARNING: All
log messages before absl::InitializeLog() is called are written to STDERR",
"I0000 ... cudart_stub.cc:31] Could not find cuda drivers ..."). Those are
dropped by `native_logs_filtered` around the import; every other line
written meanwhile (a Python warning, an import error) is written back.
"""

import contextlib
import os
import re
import sys
import tempfile

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
_NATIVE_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.-]+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [\w/.-]+:\d+\] ")


def quiet_native_logs():
    """Sets `TF_CPP_MIN_LOG_LEVEL=3` unless the user set it; returns whether
    it did (then the start-up lines are filtered too)."""
    if LEVEL_VARIABLE in os.environ:
        return False
    os.environ[LEVEL_VARIABLE] = "3"
    return True


def is_native_log_line(line):
    """Whether `line` is a line of TensorFlow's or absl's C++ logging.

    >>> is_native_log_line("I0000 00:00:1796569609.537845   13732 cudart_stub.cc:31] "
    ...                    "Could not find cuda drivers on your machine.")
    True
    >>> is_native_log_line("gated-sae: error: `--out`: the folder x does not exist.")
    False
    """
    return bool(_NATIVE_LINE.match(line))


@contextlib.contextmanager
def native_logs_filtered():
    """Inside the block, what is written to file descriptor 2 is captured;
    at its end, every line but the native log lines is written back."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not is_native_log_line(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
