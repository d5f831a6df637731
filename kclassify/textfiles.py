"""The small files every command writes and reads: atomic writes, JSON, ``labels.txt``, printed tables.

One helper each, so the run folder, the exported files and the CLI agree: a file is replaced whole
or not at all (a kill -9 never leaves half of one), and every reader of ``labels.txt`` reads the
same names from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

LABELS_FILE = "labels.txt"


def write_atomic(path: str | Path, data: str | bytes, encoding: str = "utf-8") -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``.

    Readers see the old file or the new one, never a part: what a kill -9 during the write leaves.
    The temporary file's name holds the process id, so two processes writing the same file (two
    distributed tuner workers) never share one.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding=encoding, newline="")  # the text's own line ends, on every OS
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: str | Path, doc: Any, indent: int = 2) -> None:
    """``doc`` as indented JSON (values JSON does not know as their ``str``), written atomically."""
    write_atomic(path, json.dumps(doc, indent=indent, default=str) + "\n")


def parse_labels(text: str) -> list[str]:
    """Class names from a ``labels.txt``'s text: one a line, in output order.

    Whitespace around a name (a trailing space, Windows line ends) is not part of it, and blank lines
    are skipped: what MediaPipe and every kclassify reader take from the file.
    """
    return [line.strip() for line in text.splitlines() if line.strip()]


def labels_text(labels: Sequence[str]) -> str:
    """The text of a ``labels.txt``: one name a line, ending in a newline."""
    return "".join(f"{name}\n" for name in labels)


def read_labels(path: str | Path) -> list[str]:
    """Class names from a ``labels.txt`` file (see :func:`parse_labels`); OSError or UnicodeDecodeError as raised."""
    return parse_labels(Path(path).read_text(encoding="utf-8"))


def write_labels(path: str | Path, labels: Sequence[str]) -> None:
    """Write a ``labels.txt`` atomically."""
    write_atomic(path, labels_text(labels))


def text_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None,
               right: Sequence[int] = ()) -> str:
    """Rows as a plain-text table: columns padded to their widest cell, two spaces apart.

    Args:
        rows: cells, converted with ``str`` (format numbers before).
        header: column names, printed first.
        right: indices of the columns aligned right (numbers).

    Example:
        >>> print(text_table([["a", 1], ["bcd", 22]], header=["name", "n"], right=[1]))
        name   n
        a      1
        bcd   22
    """
    lines = [list(map(str, header))] if header else []
    lines += [[str(cell) for cell in row] for row in rows]
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(max(map(len, lines)))]
    return "\n".join("  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                               for i, cell in enumerate(line)).rstrip() for line in lines)
