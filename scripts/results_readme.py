"""Refresh the tables that README.md and reports/README.md quote from the committed result files.

A quoted table sits between two marker lines:

    <!-- include: tables/variants.md#Test accuracy by panel -->
    ...copied content, rewritten by this script...
    <!-- end include -->

The path is relative to the markdown file holding the marker (so `tables/...` in reports/README.md).
    tables/x.md             the whole file
    tables/x.md#Heading     the lines under that heading up to the next heading (the heading line itself is
                            left out, so a quoted table does not add headings to the write-up)
    tables/x.csv            the csv as a markdown table, values as written; options after the path:
                            columns=a,b,c (those columns, in that order), where=col:v1|v2 (rows whose col is
                            one of the values; several where= combine with "and")

`python scripts/results_readme.py` rewrites the blocks; `--check` writes nothing and exits 1 when a block
differs from its file (the docs test runs it), so a table re-made by the pipeline cannot go stale silently.
"""

import argparse
import csv
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("README.md", "reports/README.md")
BEGIN = re.compile(r"^<!-- include: (?P<spec>.+?) -->$")
END = "<!-- end include -->"
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.*?)\s*#*\s*$")


def _strip_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _markdown_section(text: str, heading: str, path: Path) -> list[str]:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and m.group("title") == heading:
            body = []
            for rest in lines[i + 1:]:
                if HEADING.match(rest):
                    break
                body.append(rest)
            return _strip_blank(body)
    raise SystemExit(f"{path}: no heading {heading!r}")


def _csv_table(path: Path, options: list[str]) -> list[str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0]) if rows else []
    for opt in options:
        key, _, value = opt.partition("=")
        if key == "columns":
            header = value.split(",")
        elif key == "where":
            col, _, allowed = value.partition(":")
            rows = [r for r in rows if r.get(col) in allowed.split("|")]
        else:
            raise SystemExit(f"{path}: unknown include option {opt!r} (columns=, where=)")
    missing = [c for c in header if rows and c not in rows[0]]
    if missing:
        raise SystemExit(f"{path}: no column(s) {missing}")
    cell = lambda v: str(v).replace("|", r"\|")  # noqa: E731 - a pipe would split the markdown cell
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(r[c]) for c in header) + " |" for r in rows]
    return out


def render(spec: str, base: Path) -> list[str]:
    """The lines an include block with this spec holds, read from the file it names."""
    rel, *options = spec.split()
    section = ""
    if not rel.endswith(".csv"):  # markdown: a heading may hold spaces, so split the whole spec
        rel, _, section = spec.partition("#")
    path = base / rel.strip()
    if not path.is_file():
        raise SystemExit(f"include {spec!r}: no file {path}")
    if path.suffix == ".csv":
        return _csv_table(path, options)
    text = path.read_text()
    return _markdown_section(text, section, path) if section else _strip_blank(text.splitlines())


def refresh(text: str, base: Path) -> str:
    """`text` with every include block's content replaced by what its file says now."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        end = next((j for j in range(i, len(lines)) if lines[j] == END), None)
        if end is None:
            raise SystemExit(f"include {m.group('spec')!r} has no {END!r} line")
        out += ["", *render(m.group("spec"), base), "", END]
        i = end + 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", default=list(FILES), help="markdown files, relative to the repository root")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    args = p.parse_args(argv)
    stale = []
    for name in args.files:
        path = (ROOT / name) if not Path(name).is_absolute() else Path(name)
        old = path.read_text()
        new = refresh(old, path.parent)
        if new != old:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run: python scripts/results_readme.py)", file=sys.stderr)
        return 1
    for name in stale:
        print(f"refreshed {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
