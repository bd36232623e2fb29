"""Refresh ``tests/kernels.txt``: the fused kernels the test suite runs in its own kernel
cache, which ``.ci/run`` compiles ahead (``rmsprop warmup --kernels tests/kernels.txt``).

    RMSPROP_RECORD_KERNELS=/tmp/recorded.txt python -m pytest
    python scripts/suite_kernels.py /tmp/recorded.txt

Every process of the run appends the kernels it loaded to the recorded file, those of the
tests that make empty caches of their own too; kept are the kernels marked ready in the
cache this checkout's tests share (numba's folder for ``src/rmsprop/backends``), each once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rmsprop.backends import numba_compile

HEADER = """\
# The fused kernels the test suite runs in its shared kernel cache: .ci/run compiles them
# before the tests (rmsprop warmup --kernels tests/kernels.txt --jobs 2). One kernel a line:
# [switch flags, state storage (0 float, 1 bf16, 2 int8), bf16 params, math dtype].
# Refresh: RMSPROP_RECORD_KERNELS=/tmp/recorded.txt python -m pytest
#          python scripts/suite_kernels.py /tmp/recorded.txt
"""


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} RECORDED_FILE (see this script's docstring)")
    recorded = numba_compile.read_recorded(Path(sys.argv[1]))
    folder = numba_compile.cache_folder()
    if folder is None:
        sys.exit("no writable kernel cache folder")
    kept = sorted(
        (key, math) for key, math in recorded
        if (folder / numba_compile.marker_name(key, math)).exists()
    )  # fmt: skip
    target = Path(__file__).resolve().parent.parent / "tests" / "kernels.txt"
    partial = target.with_suffix(".tmp")
    lines = "".join(numba_compile.recorded_line(key, math) for key, math in kept)
    partial.write_text(HEADER + lines, encoding="utf-8")
    partial.replace(target)
    print(f"{len(kept)} of {len(recorded)} recorded kernels are in {folder}: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
