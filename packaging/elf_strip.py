"""Stripped copies of a bundle's ELF libraries, made only where stripping is safe (build.spec).

`strip --strip-unneeded` drops the symbol tables and debug sections that nothing loads: 16 MB
of libpython, a few MB of Python's own extension modules and SQLAlchemy's Cython ones. It must
not touch a library that patchelf rewrote (auditwheel does, for the libraries it vendors into a
`<package>.libs/` folder and for the modules it points at them): strip then moves or cuts a
loadable segment, and the library no longer loads ("ELF load command address/offset not
page-aligned", as numpy's OpenBLAS did under PyInstaller's own strip=True). So such files are
left as they are, and a stripped copy is kept only when its loadable segments are the same as
the original's.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

_ELF_MAGIC = b"\x7fELF"
_PT_LOAD = 1
# What the loader maps: (virtual address, size in the file, size in memory, flags, alignment).
Segment = tuple[int, int, int, int, int]


def is_elf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == _ELF_MAGIC


def vendored(dest: str) -> bool:
    """Whether `dest` (a path inside the bundle) lies in an auditwheel `<package>.libs/` folder."""
    return any(part.endswith(".libs") for part in dest.replace("\\", "/").split("/")[:-1])


def load_segments(path: Path) -> list[Segment]:
    """The PT_LOAD program headers of an ELF file; ValueError when one is not page-congruent
    (its file offset and address differ by other than a multiple of its alignment)."""
    data = path.read_bytes()
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    header = struct.unpack_from(order + ("QQQIHHHH" if wide else "IIIIHHHH"), data, 24)
    phoff, phentsize, phnum = header[1], header[5], header[6]
    segments = []
    for number in range(phnum):
        at = phoff + number * phentsize
        if wide:
            kind, flags, offset, vaddr, _, filesz, memsz, align = struct.unpack_from(
                order + "IIQQQQQQ", data, at
            )
        else:
            kind, offset, vaddr, _, filesz, memsz, flags, align = struct.unpack_from(
                order + "IIIIIIII", data, at
            )
        if kind != _PT_LOAD:
            continue
        if align > 1 and (offset - vaddr) % align:
            raise ValueError(f"{path.name}: a loadable segment is not aligned")
        if offset + filesz > len(data):
            raise ValueError(f"{path.name}: a loadable segment runs past the end of the file")
        segments.append((vaddr, filesz, memsz, flags, align))
    return segments


def patched_rpath(path: Path) -> bool:
    """Whether the RPATH or RUNPATH names a `.libs` folder: auditwheel patched this file."""
    out = subprocess.run(
        ["readelf", "-d", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    paths = re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[(.*)\]", out)
    return any(".libs" in entry for entry in paths)


def strip_copy(source: Path, target: Path) -> bool:
    """Write a stripped copy of `source` to `target`; False (and no `target`) where that is not
    safe or changes what the loader would map. The copy keeps the source's times."""
    if not is_elf(source) or patched_rpath(source):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    done = subprocess.run(
        ["strip", "--strip-unneeded", str(target)], capture_output=True, check=False
    )
    try:
        same = done.returncode == 0 and load_segments(target) == load_segments(source)
    except (ValueError, struct.error):
        same = False
    if not same:
        target.unlink()
        return False
    stat = source.stat()
    os.utime(target, (stat.st_atime, stat.st_mtime))
    return True
