#!/usr/bin/env python3
"""Mutation testing: do qkv's tests catch realistic one-line bugs?

Plants each mutation below, one at a time, in a copy of the tree (never the tree itself), builds the qkv program
and the test binary there, runs the ctest entries that cover the module, and counts the mutation as killed when
they fail or time out. Prints the kill rate per module. A developer tool, not part of `make test` (a full run builds
~100 times: about an hour on 2 cores).

  tools/mutate.py                 every mutation
  tools/mutate.py --module report only one module's
  tools/mutate.py --check         only check that every mutation applies (each original occurs exactly once)
  tools/mutate.py --match TEXT    only the mutations whose original contains TEXT (to re-run survivors)
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

# (module, file, original, replacement, ctest regex of the tests that cover it)
SAFETENSORS = "core/test_safetensors|core/test_files|train/cli/test_cli"
DATASETS = "datasets/test_dataset|train/run/test_"
DIST = "train/mpi|train/dist/test_gradients"
SCHEDULE = "optim/|train/run/test_"
CONFIG = "train/run/test_config|train/cli/test_cli"
RUN_DIR = "train/run/test_run_dir|train/cli_faults|train/run/test_"
REPORT = "train/report/test_report"
CKPT = "train/run/test_|train/cli_faults|train/cli/test_cli"
TOKENIZER = "datasets/test_bpe|datasets/test_chunks|datasets/test_tokenize|datasets/test_bpe_train"
PRECISION = "core/test_precision|core/test_checkpoint|train/run/test_step"
AUTOGRAD = "core/test_autograd|core/test_backward|core/test_checkpoint|layers/test_module|train/dist/test_gradients"
RECOMPUTE = "core/test_checkpoint|train/run/test_step"
MUTATIONS = [
    # ---- safetensors ------------------------------------------------------------------------------------------
    ("safetensors", "core/safetensors.cpp", "QKV_CHECK(n <= kMaxHeader,", "QKV_CHECK(n < kMaxHeader + 1000,", SAFETENSORS),
    ("safetensors", "core/safetensors.cpp", "QKV_CHECK(n <= size - 8,", "QKV_CHECK(n <= size,", SAFETENSORS),
    ("safetensors", "core/safetensors.cpp", "(u + 0x7fffu + ((u >> 16) & 1u)) >> 16", "(u + 0x8000u) >> 16", SAFETENSORS),
    # (to_f16's own overflow test, absu >= 0x477ff000u, is unreachable now that writing refuses such values first)
    ("safetensors", "core/safetensors.cpp", 'QKV_CHECK(seen.insert(name).second, "safetensors: duplicate', 'QKV_CHECK(seen.insert(name).second || true, "safetensors: duplicate', SAFETENSORS),
    ("safetensors", "core/safetensors.cpp", "json.append((8 - json.size() % 8) % 8, ' ');", "json.append((8 - json.size() % 8), ' ');", SAFETENSORS),
    ("safetensors", "core/safetensors.cpp", "QKV_CHECK(en.begin == expect,", "QKV_CHECK(en.begin <= expect,", SAFETENSORS),
    ("safetensors", "core/safetensors.cpp", "QKV_CHECK(expect == buffer_size,", "QKV_CHECK(expect <= buffer_size,", SAFETENSORS),
    ("safetensors", "core/safetensors.cpp", "(std::bit_cast<std::uint32_t>(p[i]) & 0x7fffffffu) >= 0x477ff000u", "(std::bit_cast<std::uint32_t>(p[i]) & 0x7fffffffu) > 0x47800000u", SAFETENSORS),
    ("safetensors", "core/files.cpp", "if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return", "if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return", SAFETENSORS + "|train/cli_faults"),
    ("safetensors", "core/files.cpp", "if (size > max_bytes) {", "if (size > max_bytes + 1) {", SAFETENSORS),
    # ---- datasets ---------------------------------------------------------------------------------------------
    ("datasets", "datasets/files.cpp", "split_ = n - n / 10;", "split_ = n - n / 20;", DATASETS),
    ("datasets", "datasets/files.cpp", "const std::int64_t starts = split_ - seq_len_;", "const std::int64_t starts = split_;", DATASETS),
    ("datasets", "datasets/files.cpp", "(n - split_ - 1) / seq_len_);", "(n - split_) / seq_len_);", DATASETS),
    ("datasets", "datasets/files.cpp", "y[t] = ids_[offset + t + 1];", "y[t] = ids_[offset + t];", DATASETS),
    ("datasets", "datasets/files.cpp", "const std::int64_t nval = std::max<std::int64_t>(1, all.count / 10);", "const std::int64_t nval = std::max<std::int64_t>(1, all.count / 5);", DATASETS),
    ("datasets", "datasets/files.cpp", "e = position_ % train_.count;", "e = (position_ + 1) % train_.count;", DATASETS),
    ("datasets", "datasets/dataset.cpp", "values[static_cast<std::size_t>(i)] = half + draw(g, v - half);", "values[static_cast<std::size_t>(i)] = draw(g, v);", DATASETS),
    ("datasets", "datasets/dataset.cpp", "std::sort(y, y + t);", "std::sort(y, y + t - 1);", DATASETS),
    ("datasets", "datasets/dataset.cpp", "QKV_CHECK(s.position >= 0 && s.position <= limit,", "QKV_CHECK(s.position <= limit,", DATASETS),
    ("datasets", "datasets/files.cpp", "wide_ = vocab.size() > 65536;", "wide_ = vocab.size() > 65537;", DATASETS),
    # ---- distributed ------------------------------------------------------------------------------------------
    ("distributed", "train/dist/data_parallel.cpp", "first = comm_.rank() * rows;", "first = 0;", DIST),
    ("distributed", "train/dist/data_parallel.h", "return comm_.distributed() ? comm_.sum(counted) : counted;", "return counted * comm_.size();", DIST),
    ("distributed", "train/dist/data_parallel.cpp", "  comm_.broadcast_values(params);\n", "\n", DIST),
    ("distributed", "train/dist/data_parallel.cpp", "optimizer.retain_state([&](std::size_t i) { return shard_->owns(i); });", "optimizer.retain_state([&](std::size_t) { return true; });", DIST),
    ("distributed", "train/dist/data_parallel.cpp", "model.set_batch_slice(comm_.rank() * rows, batch_size);", "model.set_batch_slice(0, batch_size);", DIST),
    ("distributed", "train/run/step.cpp", "local = distributed ? parallel->comm().sum(local) : local;", "local = local;", DIST),
    ("distributed", "train/dist/comm.cpp", "if (!comm.all_failing(seconds)) {", "if (false) {", DIST),
    # ---- schedule ---------------------------------------------------------------------------------------------
    ("schedule", "optim/schedule.cpp", "if (s < w) return base_lr_ * static_cast<double>(s + 1) / static_cast<double>(w);", "if (s < w) return base_lr_ * static_cast<double>(s) / static_cast<double>(w);", SCHEDULE),
    ("schedule", "optim/schedule.cpp", "(1.0 + std::cos(std::numbers::pi * std::min(t, span) / span)) / 2.0", "(1.0 + std::cos(std::numbers::pi * t / span)) / 2.0", SCHEDULE),
    ("schedule", "optim/schedule.cpp", "return base + (o.min_lr - base) * std::min(t, span) / span;", "return base + (o.min_lr - base) * t / (span + 1);", SCHEDULE),
    ("schedule", "optim/schedule.cpp", "std::floor(t / static_cast<double>(o.step_size))", "std::ceil(t / static_cast<double>(o.step_size))", SCHEDULE),
    ("schedule", "optim/schedule.cpp", "const auto span = static_cast<double>(o.total_steps - w);", "const auto span = static_cast<double>(o.total_steps);", SCHEDULE),
    # ---- config ranges ----------------------------------------------------------------------------------------
    ("config", "train/run/config_keys.cpp", '"sequence length of each example", 1, model_field("seq_len").max}', '"sequence length of each example", 0, model_field("seq_len").max}', CONFIG),
    ("config", "train/run/config.cpp", "QKV_CHECK(v >= spec.min && v <= spec.max,", "QKV_CHECK(v >= spec.min,", CONFIG),
    ("config", "train/run/config.cpp", "QKV_CHECK(x >= 0.0 && x < 1.0,", "QKV_CHECK(x >= 0.0 && x <= 1.0,", CONFIG),
    ("config", "optim/schedule.cpp", "QKV_CHECK(o.total_steps > o.warmup_steps,", "QKV_CHECK(o.total_steps >= o.warmup_steps,", CONFIG),
    ("config", "train/run/config.cpp", "QKV_CHECK(m.positions == 0 || d.seq_len <= m.positions,", "QKV_CHECK(m.positions == 0 || d.seq_len <= m.positions + 1,", CONFIG),
    ("config", "train/run/config.cpp", 'rule_of(at("optim.nesterov"), [&] { check_optimizer_options(c.optim.name, optimizer_options(c)); });', '', CONFIG),
    ("config", "train/run/config_keys.cpp", '"checkpoints kept (oldest deleted)", 1, 1e6}', '"checkpoints kept (oldest deleted)", 0, 1e6}', CONFIG),
    # ---- run directory ----------------------------------------------------------------------------------------
    ("run_dir", "core/files.cpp", "name[0] == '.' && name.find(\".tmp.\")", "name.find(\".tmp.\")", RUN_DIR),
    ("run_dir", "train/run/run_dir.cpp", 'name != "." && name != ".."', 'name != "."', RUN_DIR),
    ("run_dir", "train/run/run_dir.cpp", "if (e.path().filename() != kMarker) fs::remove_all(e.path());", "fs::remove_all(e.path());", RUN_DIR),
    ("run_dir", "train/run/run_dir.cpp", "return ec == std::errc() && end == last && step >= 0 ? step : -1;", "return ec == std::errc() && step >= 0 ? step : -1;", RUN_DIR),
    ("run_dir", "train/run/run_dir.cpp", "std::sort(found.begin(), found.end());", "std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.second < b.second; });", RUN_DIR),
    ("run_dir", "train/run/run_dir.cpp", 'name == "config.toml" || name == "train.log" || name == "metrics.jsonl" ||', 'name == "config.toml" || name == "train.log" || true ||', RUN_DIR),
    ("run_dir", "train/run/run_dir.cpp", "now.st_dev == held.st_dev && now.st_ino == held.st_ino;", "true;", RUN_DIR),
    # ---- report -----------------------------------------------------------------------------------------------
    ("report", "train/report/report.cpp", '(e.value("split", "") == "val" ? val : tr) = &e;', '(e.value("split", "") == "train" ? val : tr) = &e;', REPORT),
    ("report", "train/report/report.cpp", "if (ok) r.events.push_back(std::move(j));", "if (ok && no > 1) r.events.push_back(std::move(j));", REPORT),
    ("report", "train/report/report.cpp", 'if (e.value("split", "") == split && e.contains(c.metric)', 'if (e.contains(c.metric)', REPORT),
    ("report", "train/report/report.cpp", "key == \"split\" ? value.is_string() : value.is_number()", "key == \"split\" ? true : value.is_number()", REPORT),
    # ---- checkpoints and metrics ------------------------------------------------------------------------------
    ("checkpoint", "train/run/checkpoint.cpp", "while (static_cast<std::int64_t>(all.size()) > r.config.train.keep_checkpoints) {", "while (static_cast<std::int64_t>(all.size()) > r.config.train.keep_checkpoints + 1) {", CKPT),
    ("checkpoint", "train/run/checkpoint.cpp", 'j.value("step", std::int64_t{0}) <= step', 'j.value("step", std::int64_t{0}) < step', CKPT),
    ("checkpoint", "train/run/trainer.cpp", "for (auto it = all.rbegin(); it != all.rend(); ++it) {", "for (auto it = all.rbegin() + 1; it < all.rend(); ++it) {", CKPT),
    ("checkpoint", "train/run/checkpoint.cpp", '{"data_position", ds.position},', '{"data_position", 0},', CKPT),
    ("checkpoint", "train/run/trainer.cpp", "r_.reached_target = v.seq_acc;", "r_.reached_target = 0;", CKPT),
    ("checkpoint", "train/run/checkpoint.cpp", "check_same_data(*r.data, f, ck, file);", "", CKPT),
    ("checkpoint", "train/run/trainer.cpp", 'guarded_write("records in metrics.jsonl", r_.step, r_.dir, [&] { metrics_.append(lines); });', 'try { metrics_.append(lines); } catch (...) {}', CKPT),
    # ---- byte-level BPE ---------------------------------------------------------------------------------------
    ("bpe", "datasets/bpe.cpp", "(found[i] >> 32) < (found[best] >> 32))) best = i;", "(found[i] >> 32) <= (found[best] >> 32))) best = i;", TOKENIZER),
    ("bpe", "datasets/bpe.cpp", "if (best + 1 < size) found[best] = lookup(", "if (best + 1 < size && false) found[best] = lookup(", TOKENIZER),
    ("bpe", "datasets/bpe.cpp", "if (best > 0) found[best - 1] = lookup(", "if (best > 1) found[best - 1] = lookup(", TOKENIZER),
    ("bpe", "datasets/bpe.cpp", "      push(a.prev);\n", "\n", TOKENIZER),
    ("bpe", "datasets/bpe.cpp", "if (rank_at(at) != top >> 32) continue;  // stale", "if (rank_at(at) == kNoRank) continue;", TOKENIZER),
    ("bpe", "datasets/bpe.cpp", "if (n <= 64) {", "if (n <= 1000) {", TOKENIZER),
    ("bpe", "datasets/bpe.cpp", "if (n <= 256) cache.words.emplace(std::string(piece), m.sym);", "if (n <= 256) cache.words.emplace(std::string(piece.substr(0, n - 1)), m.sym);", TOKENIZER),
    ("bpe", "datasets/bpe.cpp", "(found == pos && found != std::string_view::npos && name.size() > len)", "(false)", TOKENIZER),
    ("bpe", "datasets/bpe.cpp", 'const bool special = key_of[id] == "<|endoftext|>" ||', 'const bool special = true ||', TOKENIZER),
    ("bpe", "datasets/bpe.cpp", "QKV_CHECK(fresh, \"tokenizer: {}:{}: the pair", "QKV_CHECK(true || fresh, \"tokenizer: {}:{}: the pair", TOKENIZER),
    # ---- pre-tokenizer ----------------------------------------------------------------------------------------
    ("pretokenize", "datasets/pretokenize.cpp", "if (c == 's' || c == 'd' || c == 'm' || c == 't') return 2;", "if (c == 's' || c == 'd' || c == 'm') return 2;", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", "(c == 'v' && s[at + 2] == 'e')", "(c == 'v' && s[at + 2] == 'v')", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", "const std::size_t j = at + (s[at] == ' ' ? 1 : 0);", "const std::size_t j = at;", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", "return k < n && last > at ? last - at : k - at;", "return k - at;", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", "{0x2000, 0x200A}", "{0x2000, 0x2009}", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", "if (b < 0xF0) return len = 3,", "if (b < 0xEF) return len = 3,", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", "if (at <= limit && !white_space_piece(piece)) cut = at;", "if (at <= limit) cut = at;", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", "s[p] == ' ' && ascii_graphic(s[p - 1]) && ascii_graphic(s[p + 1])", "s[p] == ' ' && ascii_graphic(s[p + 1])", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", 'out += in_class ? *body : "[" + *body + "]";', "out += *body;", TOKENIZER),
    ("pretokenize", "datasets/pretokenize.cpp", "fill(unicode::kNumbers, kNumber);", "fill(unicode::kNumbers, kLetter);", TOKENIZER),
    # ---- bf16 precision ---------------------------------------------------------------------------------------
    ("precision", "core/precision.cpp", "(u + 0x7fffu + ((u >> 16) & 1u)) >> 16", "(u + 0x8000u) >> 16", PRECISION),
    ("precision", "core/precision.cpp", "(u & 0x7fffffffu) > 0x7f800000u ? nan : rounded", "(u & 0x7fffffffu) > 0x7f800001u ? nan : rounded", PRECISION),
    ("precision", "core/precision.cpp", "const std::uint32_t nan = (u >> 16) | 0x40u;", "const std::uint32_t nan = u >> 16;", PRECISION),
    ("precision", "core/precision.cpp", "AutocastGuard::~AutocastGuard() { t_precision = prev_; }", "AutocastGuard::~AutocastGuard() { t_precision = Precision::Float32; }", PRECISION),
    ("precision", "core/backward.cpp", "const AutocastGuard precision(static_cast<Precision>(node.precision));  // the forward's", "", PRECISION),
    ("precision", "core/parallel.cpp", "precision_.store(matmul_precision(), std::memory_order_relaxed);", "precision_.store(Precision::Float32, std::memory_order_relaxed);", PRECISION),
    ("precision", "core/precision.cpp", "for (std::int64_t i = 0; i < b_rows; ++i) round_bf16(b + i * ldb, rb.data() + i * b_cols, b_cols);", "for (std::int64_t i = 0; i < b_rows; ++i) std::copy_n(b + i * ldb, b_cols, rb.data() + i * b_cols);", PRECISION),
    ("precision", "core/precision.cpp", "convert(b, rb.get(), k * m, value);", "std::copy_n(b, k * m, rb.get());", PRECISION),
    ("precision", "core/gemm.cpp", "    if (matmul_precision() == Precision::BFloat16) {\n      gemm_bf16(", "    if (false) {\n      gemm_bf16(", PRECISION),
    # ---- backward sweeps, grad() and hooks ----------------------------------------------------------------------
    ("backward", "core/backward.cpp", "if (it == held_.end() || --it->second.pending > 0 || !it->second.sum.defined()) continue;", "if (it == held_.end() || !it->second.sum.defined()) continue;", AUTOGRAD),
    ("backward", "core/backward.cpp", "kept && capture == nullptr) sum_into(kept->grad, g.clone());", "kept && capture == nullptr) kept->grad = g.clone();", AUTOGRAD),
    ("backward", "core/backward.cpp", "if (g.defined() && !retain_graph) release(*node);", "if (g.defined()) release(*node);", AUTOGRAD),
    ("backward", "core/backward.cpp", "if (const auto c = capture.nodes.find(&node); c != capture.nodes.end()) capture.reached[c->second] = true;", "", AUTOGRAD),
    ("backward", "core/backward.cpp", "if (capture.reached[i] && !capture.grads[i].defined()) capture.grads[i] = Tensor::zeros(inputs[i].shape(), inputs[i].dtype());", "", AUTOGRAD),
    ("backward", "core/backward.cpp", "if (e.leaf && --pending_[e.leaf.get()] == 0) (*hook_)(Tensor(e.leaf));", "if (e.leaf) (*hook_)(Tensor(e.leaf));", AUTOGRAD),
    ("backward", "core/backward.cpp", "QKV_CHECK(grad.shape() == t.shape(),", "QKV_CHECK(grad.numel() == t.numel(),", AUTOGRAD),
    ("backward", "core/backward.cpp", "    g = std::move(r);\n", "\n", AUTOGRAD),
    ("backward", "core/backward.cpp", "if (g_anomaly) check_finite_grads(node, grads);", "", AUTOGRAD),
    ("backward", "core/backward.cpp", "if (e.leaf && (capture ? capture->leaves.count(e.leaf.get()) > 0 : !e.leaf->hooks.empty()))", "if (e.leaf && (!e.leaf->hooks.empty() || (capture && capture->leaves.count(e.leaf.get()))))", AUTOGRAD),
    # ---- recomputation (core/checkpoint.cpp) -------------------------------------------------------------------
    ("recompute", "core/checkpoint.cpp", "rewound.now.push_back(rngs[i]->state()), rngs[i]->set_state(at_forward[i]);", "rewound.now.push_back(rngs[i]->state());", RECOMPUTE),
    ("recompute", "core/checkpoint.cpp", "rngs[i]->set_state(now[i]);", "(void)now[i];", RECOMPUTE),
    ("recompute", "core/checkpoint.cpp", "if (x.defined()) wrt.push_back(x), slot.push_back(0);", "if (false) wrt.push_back(x), slot.push_back(0);", RECOMPUTE),
    ("recompute", "core/checkpoint.cpp", "wrt.push_back(params[i]), slot.push_back(1 + i);", "wrt.push_back(params[i]), slot.push_back(i);", RECOMPUTE),
    ("recompute", "core/checkpoint.cpp", "/*leaf_hooks=*/false);", "/*leaf_hooks=*/true);", RECOMPUTE),
    ("recompute", "core/checkpoint.cpp", "      EnableGradGuard grad_on;\n", "\n", RECOMPUTE),
    ("recompute", "core/checkpoint.cpp", "    NoGradGuard no_grad;\n    out = f(x);", "    out = f(x);", RECOMPUTE),
    ("recompute", "core/checkpoint.cpp", "if (!any_requires_grad(inputs)) return f(x);", "", RECOMPUTE),
    # ---- the thread pool's wake-up ----------------------------------------------------------------------------
    ("parallel", "core/parallel.cpp", "== chunks && caller_sleeping_.load()) done_.notify_one();", "== chunks && caller_sleeping_.load() && false) done_.notify_one();", "core/test_parallel"),
]


def run(cmd, cwd, timeout=None, quiet=True):
    out = subprocess.DEVNULL if quiet else None
    try:
        return subprocess.run(cmd, cwd=cwd, stdout=out, stderr=out, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", action="append", help="only this module's mutations (repeatable)")
    ap.add_argument("--match", action="append", help="only the mutations whose original contains this text (repeatable)")
    ap.add_argument("--check", action="store_true", help="only check that every mutation applies")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    src = pathlib.Path(__file__).resolve().parent.parent
    chosen = [m for m in MUTATIONS if (not args.module or m[0] in args.module)
              and (not args.match or any(t in m[2] for t in args.match))]
    bad = []
    for module, file, old, new, _ in chosen:
        if not (src / file).exists():
            bad.append(f"{module}: {file}: no such file")
            continue
        n = (src / file).read_text().count(old)
        if n != 1:
            bad.append(f"{module}: {file}: the original occurs {n} times: {old[:70]!r}")
    if bad or args.check:
        print("\n".join(bad) or f"all {len(chosen)} mutations apply")
        return 1 if bad else 0

    work = pathlib.Path(tempfile.mkdtemp(prefix="qkv-mutate."))
    files = subprocess.run(["git", "ls-files", "-z"], cwd=src, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        dst = work / f.decode()
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / f.decode(), dst)
    build = work / "build"
    jobs = str(os.cpu_count() or 2)
    print(f"qkv mutate: building the unmutated tree in {work}", flush=True)
    if run(["cmake", "-S", ".", "-B", "build", "-DCMAKE_BUILD_TYPE=Release", "-DQKV_BUILD_BENCH=OFF",
            "-DQKV_BUILD_EXAMPLES=OFF", "-DQKV_INSTALL=OFF"], work) != 0 or \
       run(["cmake", "--build", "build", "-j", jobs, "--target", "qkv", "qkv_tests"], work) != 0:
        print("qkv mutate: the unmutated tree does not build")
        return 1
    results = {}
    for i, (module, file, old, new, tests) in enumerate(chosen, 1):
        path = work / file
        original = path.read_text()
        path.write_text(original.replace(old, new))
        t0 = time.time()
        if run(["cmake", "--build", "build", "-j", jobs, "--target", "qkv", "qkv_tests"], work) != 0:
            verdict = "killed (does not compile)"
        else:
            code = run(["ctest", "--test-dir", "build", "-R", tests, "-j", jobs, "--timeout", "180"], work, timeout=1800)
            verdict = "killed" if code != 0 else "SURVIVED"
        path.write_text(original)
        os.utime(path)  # the next build recompiles the restored file
        results.setdefault(module, []).append(verdict)
        print(f"[{i}/{len(chosen)}] {module:12} {verdict:26} {time.time() - t0:5.0f} s  {file}: {old[:60]!r}",
              flush=True)
    print("\nkill rate per module:")
    total = killed = 0
    for module, verdicts in results.items():
        k = sum(v.startswith("killed") for v in verdicts)
        total += len(verdicts)
        killed += k
        print(f"  {module:12} {k}/{len(verdicts)} ({100 * k / len(verdicts):.0f}%)")
    print(f"  {'all':12} {killed}/{total} ({100 * killed / total:.0f}%)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
