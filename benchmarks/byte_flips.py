"""Single-byte damage to an artifact: how often does it read back silently different?

    python benchmarks/byte_flips.py results/fits/beta.h5 fit [flips] [seed]

Flips one random byte (XOR with a random non-zero value) of a copy of the file, ``flips`` times
(200), and reads each copy with ``sviflow.h5io.read_artifact``: "refused" (ArtifactError, the
one-line message), "identical" (the byte was unused), "silent" (read back different: the case
that must not happen) or "other" (an exception that is not ArtifactError: a bare traceback).
Issue 17 measured the fit file beta.h5 of tests/configs/faults/base.yaml, seeds 0 to 4, 1,000
flips in all: before the file's SHA-256 (schema version 3), 567 refused, 226 identical, 86 silent
(the config, stop, timings, versions, moment_labels: JSON attributes in HDF5's fractal heap,
which it does not checksum) and 121 other (bare RuntimeError and KeyError); after (version 4),
733 refused, 267 identical, 0 silent, 0 other. A version 3 file, which has no digest, is still
read as it is.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import numpy as np

from sviflow.h5io import ArtifactError, read_artifact


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)):
        return a == b
    a, b = np.asarray(a), np.asarray(b)
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    )


def flips(path: Path, kind: str, count: int = 200, seed: int = 0) -> dict:
    original = read_artifact(path, kind)
    raw = path.read_bytes()
    rng = random.Random(seed)
    counts = {"refused": 0, "identical": 0, "silent": 0, "other": 0}
    with tempfile.TemporaryDirectory() as folder:
        damaged = Path(folder) / path.name
        for _ in range(count):
            data = bytearray(raw)
            data[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
            damaged.write_bytes(bytes(data))
            try:
                read = read_artifact(damaged, kind)
            except ArtifactError:
                counts["refused"] += 1
                continue
            except Exception:  # noqa: BLE001  (what is counted: anything else escaping)
                counts["other"] += 1
                continue
            same_read = same(dict(read), dict(original)) and same(read.attrs, original.attrs)
            counts["identical" if same_read else "silent"] += 1
    return counts


if __name__ == "__main__":
    arguments = sys.argv[1:]
    print(flips(Path(arguments[0]), arguments[1], *(int(a) for a in arguments[2:4])))
