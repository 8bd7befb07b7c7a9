"""Every refusal speechft can give, read from the sources, as the README's table.

``python -m tests.refusals`` prints the table (paste it under "## Refusals" in README.md);
tests/test_refusals.py checks the README lists every message found here. A message is the
text of a ``SpeechFTError(...)`` (an f-string's fields shown as ``‹expression›``) or of a
recipe's ``recipe_die``/``speechft: error:`` line.
"""

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "speechft_upstream"

# Which command a module's refusals come from (the first matching prefix wins).
WHERE = [
    ("speechft_upstream/merge/", "merge"),
    ("speechft_upstream/checkpoints/extract", "extract"),
    ("speechft_upstream/checkpoints/convert", "convert"),
    ("speechft_upstream/checkpoints/hf/", "export-hf"),
    ("speechft_upstream/checkpoints/info", "info"),
    ("speechft_upstream/checkpoints/atomic", "every writer"),
    ("speechft_upstream/checkpoints/stream", "merge (writing)"),
    ("speechft_upstream/checkpoints/", "every checkpoint reader"),
    ("speechft_upstream/upstream/registry", "register, -u NAME"),
    ("speechft_upstream/upstream/", "-u speechft_* (runner, s3prl.hub, torch.hub)"),
    ("speechft_upstream/hubconf", "-u speechft_* (runner, s3prl.hub, torch.hub)"),
    ("speechft_upstream/finetune/unsupervised", "unsupervised"),
    ("speechft_upstream/finetune/audio_data", "unsupervised, analyze (audio folders)"),
    ("speechft_upstream/finetune/", "-u speechft_* -g settings (stable fine-tuning, baselines)"),
    ("speechft_upstream/evaluate/score", "score"),
    ("speechft_upstream/evaluate/", "analyze"),
    ("speechft_upstream/data/", "corpus"),
    ("speechft_upstream/pretrain/", "pretrain"),
    ("speechft_upstream/benchmark/", "benchmark"),
    ("speechft_upstream/compat/", "s3prl's runner (compat fixes)"),
    ("downstream_recipes/", "recipes (<task>.sh)"),
    ("", "speechft"),
]


def _where(path):
    rel = path.relative_to(REPO).as_posix()
    return next(name for prefix, name in WHERE if rel.startswith(prefix))


def _text(node):
    """A message template from an expression: literal text, ‹fields›, or None when not literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append(f"‹{ast.unparse(value.value)}›")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is not None or right is not None:
            return (left if left is not None else f"‹{ast.unparse(node.left)}›") + \
                   (right if right is not None else f"‹{ast.unparse(node.right)}›")
    return None


def python_refusals():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "SpeechFTError",) and node.args:
                message = _text(node.args[0])
                if message is None:
                    continue  # passes on a message built elsewhere (that one is listed where it is built)
                yield _where(path), " ".join(message.split())


def recipe_refusals():
    for path in sorted((REPO / "downstream_recipes").glob("*.sh")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for found in re.finditer(r'recipe_die "((?:[^"\\]|\\.)*)"|speechft: error: ([^"\']*)', line):
                message = found.group(1) or found.group(2)
                if message.strip() and "$*" not in message:
                    yield _where(path), message.strip()


def refusals():
    seen, rows = set(), []
    for row in [*python_refusals(), *recipe_refusals()]:
        if row not in seen:
            seen.add(row)
            rows.append(row)
    return sorted(rows, key=lambda r: (r[0], r[1].lower()))


def cell(text):
    return text.replace("|", "\\|")


def table():
    lines = ["| command | `speechft: error: …` |", "|---|---|"]
    lines += [f"| {where} | `{cell(message)}` |" for where, message in refusals()]
    return "\n".join(lines)


START, END = "<!-- refusals:start -->", "<!-- refusals:end -->"


def write_readme(readme):
    """Replace the table between the markers in place (atomically: a crash leaves the old file)."""
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    tmp = readme.with_name(readme.name + ".tmp")
    tmp.write_text(head + START + "\n" + table() + "\n" + END + tail, encoding="utf-8")
    tmp.replace(readme)


if __name__ == "__main__":
    # `python -m tests.refusals --write` updates README.md; without it the table goes to stdout.
    if sys.argv[1:] == ["--write"]:
        write_readme(Path(__file__).resolve().parents[1] / "README.md")
    else:
        sys.stdout.write(table() + "\n")
