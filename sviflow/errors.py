"""The errors sviflow raises for what a user gave it: importable from every module without
importing anything else of sviflow's (or jax)."""

import errno
import re

# errors of the disk, not of a step: one line each, with what to do
DISK_ERRORS = {
    errno.ENOSPC: "free space on its disk (df -h shows how much is left) and run snakemake again",
    errno.EDQUOT: "free space within your disk quota and run snakemake again",
    errno.EROFS: "results/ must be on a writable file system",
    errno.EACCES: "check that its folder exists and is writable",
}


def disk_error(error: BaseException) -> tuple[int, str] | None:
    """(errno, what to do) of an error of the disk, or None: an OSError's errno, or the
    ``errno = 28`` that HDF5 writes into the text of the error of a failed write (h5py raises
    it as a RuntimeError or an OSError without errno)."""
    number = getattr(error, "errno", None)
    if number not in DISK_ERRORS:
        found = re.search(r"errno = (\d+)", str(error))
        number = int(found.group(1)) if found else None
    return (number, DISK_ERRORS[number]) if number in DISK_ERRORS else None


class ConfigError(ValueError):
    """A config entry, or a file it names, that cannot be turned into what it names. The message
    starts with the config key (``fits.f.guide.name: ...``) or the file and line."""
