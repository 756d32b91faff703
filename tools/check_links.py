#!/usr/bin/env python3
"""Every relative link in README.md and docs/*.md resolves (the file exists; a #fragment names a heading of it), and
every docs/NAME.md a source file or script mentions exists. Run by ctest as docs/links (make test).

Prints each broken link as FILE:LINE: what, and exits 1 if there is any.
"""
import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MENTION = re.compile(r"\bdocs/([a-z0-9_-]+\.md)(#[a-z0-9_-]+)?")
SOURCE_DIRS = ["core", "layers", "optim", "datasets", "train", "tests", "examples", "bench", "tools", "cmake", ".ci"]


def anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"[`*_]", lambda m: m.group(0) if m.group(0) == "_" else "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(md):
    out, fence = set(), False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            out.add(anchor(m.group(1)))
    return out


def check_target(where, target, errors):
    path, _, fragment = target.partition("#")
    doc = (where.parent / path).resolve() if path else where
    if not doc.exists():
        return errors.append(f"{where.relative_to(ROOT)}: {target}: no such file")
    if fragment and doc.suffix == ".md" and fragment not in anchors(doc):
        errors.append(f"{where.relative_to(ROOT)}: {target}: {doc.relative_to(ROOT)} has no heading #{fragment}")


def main():
    errors = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        fence = False
        for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                fence = not fence
            if fence:
                continue
            for target in LINK.findall(line):
                if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto: are not checked
                    before = len(errors)
                    check_target(md, target, errors)
                    errors[before:] = [f"{e.split(':', 1)[0]}:{n}:{e.split(':', 1)[1]}" for e in errors[before:]]
    for d in SOURCE_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if not p.is_file() or p.suffix not in {".h", ".cpp", ".py", ".sh", ".js", ".cmake", ".txt", ""} or "fixtures" in p.parts:
                continue
            for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                for name, fragment in MENTION.findall(line):
                    doc = ROOT / "docs" / name
                    if not doc.exists():
                        errors.append(f"{p.relative_to(ROOT)}:{n}: docs/{name}: no such page")
                    elif fragment and fragment[1:] not in anchors(doc):
                        errors.append(f"{p.relative_to(ROOT)}:{n}: docs/{name}{fragment}: no such heading")
    for e in errors:
        print(e)
    print(f"links: {len(errors)} broken")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
