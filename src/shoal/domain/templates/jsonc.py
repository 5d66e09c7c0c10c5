"""Deployment bodies as ``az deployment group create`` sends them: JSON with comments.

az splices the template file's text, as written, into the body (``..., template:{file text}}}``: an unquoted
key, and whatever comments the file has), so that Azure can name lines and columns of the file itself. This turns
such text into JSON with every value on the same line (comments become spaces, unquoted keys get quotes, trailing
commas go), so the positions found in it are the file's lines.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z_$][\w$]*(?=\s*:)")
_TRAILING = re.compile(r",(?=\s*[}\]])")


def to_json(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif (m := _KEY.match(text, i)) is not None and (not out or not out[-1][-1:].isalnum()):
            out.append(f'"{m.group(0)}"')
            i = m.end()
        else:
            out.append(c)
            i += 1
    return _strip_trailing_commas("".join(out))


def _strip_trailing_commas(text: str) -> str:
    """Commas before a closing bracket (outside strings) become spaces."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', text)
    return "".join(p if k % 2 else _TRAILING.sub(" ", p) for k, p in enumerate(parts))
