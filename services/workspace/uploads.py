"""Evidence files: what may be uploaded (pure checks, unit-tested).

A file is accepted by what it is, not by what it is called: its first bytes must be those of
a PDF, PNG or JPEG, whatever its name or the browser's content type say; at most the size
limit. It is kept in the database under a name made safe for a download header, and always
served as an attachment with ``nosniff``, so it can never run as a page of the workspace.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"%PDF-", "application/pdf", ".pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
)
ALLOWED = "PDF, PNG or JPEG"


@dataclass(frozen=True)
class Checked:
    content_type: str | None
    filename: str
    problems: tuple[str, ...]


def safe_filename(name: str, extension: str) -> str:
    """A plain file name: no path, no control or quoting characters, at most 100 characters,
    ending in the extension of what the file really is."""
    base = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", base.rsplit(".", 1)[0]).strip(" ._")[:90]
    return f"{stem or 'evidence'}{extension}"


def check(name: str, data: bytes, limit: int) -> Checked:
    """Whether ``data`` may be kept as evidence, as what, under which name."""
    problems = []
    if not data:
        problems.append("The selected file is empty")
    elif len(data) > limit:
        problems.append(f"The selected file must be smaller than {limit // (1024 * 1024)} MB")
    kind = next(((ctype, ext) for magic, ctype, ext in SIGNATURES if data.startswith(magic)),
                None)
    if data and kind is None:
        problems.append(f"The selected file must be a {ALLOWED}")
    if problems:
        return Checked(None, "", tuple(problems))
    assert kind is not None
    return Checked(kind[0], safe_filename(name, kind[1]), ())
