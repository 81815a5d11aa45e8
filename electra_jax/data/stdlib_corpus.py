"""A real-text corpus that every machine already has: the docstrings of Python's standard library.

Read with `ast` (nothing is imported or executed). Each docstring is a document; its paragraphs are
split into sentences, one per line, in the reference's text format.
"""
from __future__ import annotations

import ast
import inspect
import os
import re
import sysconfig

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _sentences(docstring: str) -> list[str]:
    out = []
    for paragraph in inspect.cleandoc(docstring).split("\n\n"):
        lines = [l.strip() for l in paragraph.splitlines()]
        if any(l.startswith((">>>", "...", "$ ")) for l in lines):
            continue  # doctest and shell examples are code, not prose
        text = " ".join(l for l in lines if l)
        out += [s for s in _SENTENCE_END.split(text) if len(s) > 3]
    return out


def docstring_documents(stdlib_dir: str | None = None, min_chars: int = 80):
    """Yield documents (lists of sentences) from every docstring under the standard library."""
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a few test files are deliberately broken
            for node in ast.walk(tree):
                if isinstance(node, _NODES):
                    doc = ast.get_docstring(node, clean=False)
                    if doc and len(doc) >= min_chars:
                        sentences = _sentences(doc)
                        if sentences:
                            yield sentences


def write_corpus(path: str, max_bytes: int = 8 << 20) -> dict:
    """Write up to `max_bytes` of docstring text to `path`; return counts."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    docs = size = 0
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for doc in docstring_documents():
            text = "\n".join(doc) + "\n\n"
            f.write(text)
            docs, size = docs + 1, size + len(text.encode())
            if size >= max_bytes:
                break
    os.replace(path + ".tmp", path)
    return dict(path=path, documents=docs, bytes=size)
