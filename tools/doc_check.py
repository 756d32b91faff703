#!/usr/bin/env python3
"""Runs the commands the documentation shows (ctest docs/commands, label slow; make check-all and CI run it).

Every line of a ```sh block in README.md and docs/*.md is a command. Each document's commands run in order in a
work directory of its own (holding configs/ and bench/configs/, as the source tree does), so a document's block
must create the runs it uses, as a reader following it would. How each kind of command is covered:

  build/bin/qkv ...          run; it must exit 0
  mpirun ... build/bin/qkv   run (adding --oversubscribe, and --allow-run-as-root as root); --hostfile lines need
                             other machines and are reported as not run
  build/bin/bench_*          run (the Google Benchmark programs, with the documented flags)
  make train                 what it runs once built: qkv train configs/reverse.toml --force
  make test|build|check-all|fuzz|layout, cmake --install, tools/*.sh, /usr/bin/python3 tools/...
                             covered elsewhere: CI runs make, ctest package/consumer installs, train/report_browser
                             and interop/torch run the tools; checked here to exist
  bench/*.sh                 benchmark scripts (minutes each, libtorch for comparisons): syntax-checked with bash -n
                             and reported as not run

A line that matches none of these fails the check: a documented command that nothing runs.
Usage: doc_check.py QKV_BUILD_DIR WORK_DIR [SOURCE_DIR]   (DOC_CHECK_ONLY=NAME: only docs/NAME.md or README)
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path


def blocks(path):
    text = path.read_text()
    for m in re.finditer(r"```(sh|bash)\n(.*?)```", text, re.S):
        joined = m.group(2).replace("\\\n", " ")
        for line in joined.split("\n"):
            words = shlex.split(line, comments=True)
            if words:
                yield words


def run(words, cwd, env, timeout=900):
    # An absolute pattern (/usr/share/common-licenses/*) expands as the shell would.
    words = [x for w in words for x in (sorted(glob.glob(w)) or [w] if w.startswith("/") and "*" in w else [w])]
    shown = " ".join(shlex.quote(w) for w in words)
    try:
        p = subprocess.run(words, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s: {shown}"
    if p.returncode != 0:
        tail = "\n".join(p.stdout.decode(errors="replace").splitlines()[-8:])
        return f"exit {p.returncode}: {shown}\n{tail}"
    return None


def main():
    build, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    src = Path(sys.argv[3]).resolve() if len(sys.argv) > 3 else Path(__file__).resolve().parent.parent
    qkv = build / "bin" / "qkv"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    mpirun = shutil.which("mpirun")
    failures, ran, covered, not_run = [], 0, 0, []
    docs = [src / "README.md"] + sorted((src / "docs").glob("*.md"))
    if os.environ.get("DOC_CHECK_ONLY"):  # one document, e.g. DOC_CHECK_ONLY=distributed
        docs = [d for d in docs if d.stem == os.environ["DOC_CHECK_ONLY"]]
    for doc in docs:
        cwd = work / doc.stem
        shutil.rmtree(cwd, ignore_errors=True)
        (cwd / "bench").mkdir(parents=True)
        shutil.copytree(src / "configs", cwd / "configs")
        shutil.copytree(src / "bench" / "configs", cwd / "bench" / "configs")
        for words in blocks(doc):
            where = f"{doc.relative_to(src)}: {' '.join(words)}"
            head = words[0]
            if head == "build/bin/qkv" or head.startswith("build/bin/bench_"):
                error = run([str(build / "bin" / head.split("/")[-1])] + words[1:], cwd, env)
                ran += 1
            elif head == "mpirun":
                if "--hostfile" in words:
                    not_run.append(f"{where} (needs other machines)")
                    continue
                if mpirun is None:
                    not_run.append(f"{where} (no mpirun here)")
                    continue
                args = [w if w != "build/bin/qkv" else str(qkv) for w in words[1:]]
                error = run([mpirun, "--oversubscribe"] + args, cwd, env)
                ran += 1
            elif words[:2] == ["make", "train"]:
                error = run([str(qkv), "train", "configs/reverse.toml", "--force"], cwd, env)
                ran += 1
            elif head == "make" and set(words[1:]) & {"test", "build", "check-all", "fuzz", "layout"}:
                covered += 1
                if "bench/compare.sh" in words:  # `make build && bench/compare.sh 5`
                    error = run(["bash", "-n", str(src / "bench" / "compare.sh")], cwd, env)
                    not_run.append(f"{where} (a benchmark: minutes, and libtorch)")
                else:
                    error = None
            elif head == "cmake" and "--install" in words:
                covered += 1  # ctest package/consumer installs the package and builds against it
                error = None
            elif head.startswith("bench/") or (head.startswith("THREADS=") and words[1].startswith("bench/")):
                script = head if head.startswith("bench/") else words[1]
                error = run(["bash", "-n", str(src / script)], cwd, env)
                not_run.append(f"{where} (a benchmark: minutes, and libtorch for comparisons)")
            elif head.startswith("tools/") or (head == "/usr/bin/python3" and words[1].startswith("tools/")):
                script = head if head.startswith("tools/") else words[1]
                error = None if (src / script).exists() else f"no such script: {script}"
                covered += 1
            else:
                error = "a documented command that doc_check.py does not know how to run"
            if error:
                failures.append(f"{where}\n  {error}")
    for n in not_run:
        print(f"not run: {n}")
    for f in failures:
        print(f"FAIL: {f}")
    print(f"doc check: {ran} commands run, {covered} covered by CI or other tests, {len(not_run)} not run, "
          f"{len(failures)} failed ({len(docs)} documents)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
