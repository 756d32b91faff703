#!/usr/bin/env python3
"""The shape of the tree, checked (make layout; CI runs it):

1. no C++ source or header in the library, tests, examples, bench or tools is over MAX_LINES lines;
2. no include cycle among qkv's own files, following includes of <qkv/...> and "qkv/..." through the tree; in
   train/'s rooms among modules (a header and its source are one: comm.cpp including gradients.h, which
   includes comm.h, is a cycle);
3. the CLI holds no library code: no file outside train/cli/ includes a train/cli/ header (main.cpp and the tests
   drive the program through run_cli), and train/cli/ defines no class or struct outside an anonymous
   namespace or a command's declare_ function;
4. the folders say where things go: every file of train/ is in one of its rooms, and a room includes only the
   rooms below it (ROOM_DEPENDS; the one exception, the Trainer writing the report, is listed there too).

Prints each violation as FILE:LINE: what, and exits 1 if there is any.
"""
import re
import sys
from pathlib import Path

MAX_LINES = 450
ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ["core", "layers", "optim", "datasets", "train", "tests", "examples", "bench", "tools"]
TRAIN_ROOMS = {"io", "run", "dist", "use", "report", "cli"}
# The rooms each room of train/ may include (docs/architecture.md draws the same picture).
ROOM_DEPENDS = {
    "io": {"io"},
    "dist": {"dist", "io"},
    "run": {"run", "io", "dist"},
    "use": {"use", "run", "io"},
    "report": {"report", "use", "run", "io"},
    "cli": TRAIN_ROOMS,
}
ROOM_EXCEPTIONS = {("train/run/trainer.cpp", "report")}  # the Trainer rewrites the report at every checkpoint
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](qkv/[^>"]+)[>"]')


def sources():
    for d in CODE_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if p.suffix in {".h", ".cpp"} and "fuzz/corpus" not in str(p):
                yield p


def rel(p):
    return p.relative_to(ROOT).as_posix()


def includes(p):
    out = []
    for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
        m = INCLUDE.match(line)
        if m:
            target = ROOT / m.group(1)[len("qkv/"):]
            if target.exists():
                out.append((n, target))
    return out


def check_sizes(files, errors):
    for p in files:
        n = len(p.read_text(errors="replace").splitlines())
        if n > MAX_LINES:
            errors.append(f"{rel(p)}:{n}: {n} lines, over {MAX_LINES}: split it by job")


def module(p):
    """In train/'s rooms a header and its source are one module (comm.h + comm.cpp), and a private half named
    *_keys belongs to its module: a cycle through either is a cycle. Elsewhere each file is its own node (core's
    tensor, autograd and ops are one unit that calls itself)."""
    if room_of(p) is None:
        return p
    m = p.with_suffix("")
    return m.with_name(m.name[: -len("_keys")]) if m.name.endswith("_keys") else m


def check_cycles(files, errors):
    graph = {}
    for p in files:
        for _, t in includes(p):
            if module(t) != module(p):
                graph.setdefault(module(p), set()).add(module(t))
    state = {}  # 1 visiting, 2 done

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                errors.append(f"{rel(m)}:1: include cycle: " + " -> ".join(rel(c) for c in cycle))
            elif state.get(t) is None:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if state.get(m) is None:
            visit(m, [])


def check_cli(files, errors):
    cli = ROOT / "train" / "cli"
    for p in files:
        if cli in p.parents:
            continue
        for n, t in includes(p):
            if cli in t.parents and t.name != "cli.h":
                errors.append(f"{rel(p)}:{n}: includes {rel(t)}: the commands are the CLI's own")
            elif cli in t.parents and p.parts[len(ROOT.parts)] not in {"tests"}:
                errors.append(f"{rel(p)}:{n}: library code includes the CLI ({rel(t)})")
    for p in sorted(cli.glob("*.cpp")):
        depth, anon = 0, []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if re.match(r"^namespace\s*\{", line):
                anon.append(depth)
            if re.match(r"^(class|struct)\s+\w+", line) and not anon:
                errors.append(f"{rel(p)}:{n}: a type at file scope in the CLI: library code belongs in train/run or train/use")
            depth += line.count("{") - line.count("}")
            while anon and depth <= anon[-1]:
                anon.pop()


def room_of(p):
    parts = p.relative_to(ROOT).parts
    return parts[1] if len(parts) > 2 and parts[0] == "train" else None


def check_rooms(files, errors):
    for p in files:
        room = room_of(p)
        if room not in ROOM_DEPENDS:
            continue
        for n, t in includes(p):
            to = room_of(t)
            if to and to not in ROOM_DEPENDS[room] and (rel(p), to) not in ROOM_EXCEPTIONS:
                errors.append(f"{rel(p)}:{n}: train/{room}/ includes train/{to}/ ({rel(t)}), a room above it")
    for p in sorted((ROOT / "train").iterdir()):
        if p.is_file() and p.name != "CMakeLists.txt":
            errors.append(f"{rel(p)}:1: a file of train/ outside its rooms ({', '.join(sorted(TRAIN_ROOMS))})")
        elif p.is_dir() and p.name not in TRAIN_ROOMS:
            errors.append(f"{rel(p)}:1: train/{p.name}/ is not one of the rooms; add it to tools/check_layout.py "
                          "and docs/architecture.md together")


def main():
    files = list(sources())
    errors = []
    check_sizes(files, errors)
    check_cycles(files, errors)
    check_cli(files, errors)
    check_rooms(files, errors)
    for e in errors:
        print(e)
    print(f"layout: {len(files)} files, {len(errors)} problem{'s' if len(errors) != 1 else ''}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
