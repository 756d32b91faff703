#include "../support.h"

#include <qkv/datasets/dataset.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

using namespace qkv;

namespace {
std::vector<std::int64_t> row(const Tensor& t, std::int64_t i) {
  const auto* p = t.data<std::int64_t>() + i * t.size(1);
  return {p, p + t.size(1)};
}
std::string write_tmp(const std::string& name, const std::string& text) {
  const auto dir = test::process_dir();
  std::filesystem::create_directories(dir);
  const auto path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}
}  // namespace

TEST_CASE("copy, reverse, sort: targets follow from inputs; tokens in range") {
  for (const std::string task : {"copy", "reverse", "sort"}) {
    auto d = make_dataset({.task = task, .vocab_size = 7, .seq_len = 9, .val_size = 20}, 1);
    const Batch b = d->next_batch(16);
    CHECK(b.inputs.shape() == Shape{16, 9});
    for (std::int64_t i = 0; i < 16; ++i) {
      auto x = row(b.inputs, i), y = row(b.targets, i);
      for (auto v : x) CHECK((v >= 0 && v < 7));
      if (task == "reverse") std::reverse(x.begin(), x.end());
      if (task == "sort") std::sort(x.begin(), x.end());
      CHECK(x == y);
    }
    CHECK(d->validation().inputs.shape() == Shape{20, 9});
  }
}

TEST_CASE("deterministic given the seed; validation from its own stream") {
  auto a = make_dataset({.task = "reverse"}, 5), b = make_dataset({.task = "reverse"}, 5), c = make_dataset({.task = "reverse"}, 6);
  CHECK(a->next_batch(4).inputs.to_vector() == b->next_batch(4).inputs.to_vector());
  CHECK(a->validation().inputs.to_vector() == b->validation().inputs.to_vector());
  CHECK(a->validation().inputs.to_vector() != c->validation().inputs.to_vector());
  // Drawing training batches does not move the validation set, and it differs from the training stream.
  auto fresh = make_dataset({.task = "reverse"}, 5);
  CHECK(narrow(fresh->validation().inputs, 0, 0, 4).to_vector() != fresh->next_batch(4).inputs.to_vector());
  // Restoring the state continues the stream exactly.
  const DataState st = a->state();
  const auto next = a->next_batch(3).inputs.to_vector();
  b->set_state(st);
  CHECK(b->next_batch(3).inputs.to_vector() == next);
}

TEST_CASE("recall: distinct keys, values from the upper half, queries answered, the rest ignored") {
  auto d = make_dataset({.task = "recall", .vocab_size = 16, .seq_len = 12}, 3);
  const Batch b = d->next_batch(50);
  for (std::int64_t i = 0; i < 50; ++i) {
    const auto x = row(b.inputs, i), y = row(b.targets, i);
    std::map<std::int64_t, std::int64_t> pairs;
    for (int p = 0; p < 4; ++p) {
      CHECK(x[2 * p] < 8);
      CHECK(x[2 * p + 1] >= 8);
      CHECK(pairs.emplace(x[2 * p], x[2 * p + 1]).second);  // keys distinct
      CHECK(y[2 * p] == -100);
      CHECK(y[2 * p + 1] == -100);
    }
    for (int q = 8; q < 12; ++q) CHECK(y[q] == pairs.at(x[q]));
  }
  CHECK_ERROR(make_dataset({.task = "recall", .vocab_size = 4, .seq_len = 30}, 0), "recall needs data.seq_len >= 3, data.vocab_size >= 4 and data.vocab_size / 2 >= data.seq_len / 3");
}

TEST_CASE("text: character vocabulary, shifted targets, last 10% validates, file order without shuffle") {
  std::string text;
  for (int i = 0; i < 50; ++i) text += "héllo wörld ";  // 600 characters, some multi-byte
  const auto path = write_tmp("text.txt", text);
  auto d = make_dataset({.task = "text", .seq_len = 8, .val_size = 100, .path = path, .shuffle = false}, 0);
  CHECK(d->vocab_size() == 9);  // space, d, h, l, o, r, w, é, ö
  CHECK(d->vocab() == " dhlorwéö");
  CHECK(d->decode(d->encode("hé")[1]) == "é");
  const Batch b = d->next_batch(2);
  const auto x0 = row(b.inputs, 0), y0 = row(b.targets, 0), x1 = row(b.inputs, 1);
  std::string s;
  for (auto t : x0) s += d->decode(t);
  CHECK(s == "héllo wö");
  for (int t = 0; t + 1 < 8; ++t) CHECK(y0[t] == x0[t + 1]);
  std::string s1;
  for (auto t : x1) s1 += d->decode(t);
  CHECK(s1 == "rld héll");  // the next window in file order
  CHECK(d->validation().inputs.size(0) == (60 - 1) / 8);  // windows of the last 60 characters
  CHECK_ERROR(make_dataset({.task = "text", .seq_len = 400, .path = path}, 0), "too short for data.seq_len = 400");
  CHECK_ERROR(make_dataset({.task = "text", .path = "/nonexistent"}, 0), "data: data.path: /nonexistent: no such file");
  CHECK_ERROR(d->encode("z"), "character 'z' (U+007A) is not in the vocabulary");
}

// Ids are kept in 16 bits while the vocabulary fits (65,536 characters) and in 32 bits past it: a 65,537th
// character must keep its id 65,536, not wrap to 0.
TEST_CASE("text: a vocabulary of 65,537 characters keeps every id") {
  std::string chars;
  for (char32_t cp = 0x10000; cp <= 0x10000 + 65536; ++cp)
    chars += {static_cast<char>(0xf0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3f)),
              static_cast<char>(0x80 | ((cp >> 6) & 0x3f)), static_cast<char>(0x80 | (cp & 0x3f))};
  std::string highest_run;
  for (int i = 0; i < 20; ++i) highest_run += chars.substr(chars.size() - 4);  // the last windows: the highest id
  auto d = make_dataset({.task = "text", .seq_len = 8, .val_size = 100000,
                         .path = write_tmp("wide.txt", chars + chars + highest_run)}, 0);
  CHECK(d->vocab_size() == 65537);
  const auto ids = d->validation().targets.to_vector();
  CHECK(*std::max_element(ids.begin(), ids.end()) == 65536.0);
}

// Training windows never reach into the validation tail, and validation windows never read past the end: the
// tail's characters ('v') appear in no training batch, and the last window's last target is the file's last one.
TEST_CASE("text: training batches stay in the training part; validation windows end inside the file") {
  const std::string text = std::string(107, 'a') + "b" + std::string(11, 'v') + "w";  // 120: the last 12 validate
  const auto path = write_tmp("split.txt", text);
  auto d = make_dataset({.task = "text", .seq_len = 4, .val_size = 100, .path = path}, 0);
  const std::int64_t v = d->encode("v")[0], w = d->encode("w")[0], b = d->encode("b")[0];
  bool saw_b = false;
  for (int i = 0; i < 200; ++i) {
    const Batch batch = d->next_batch(8);
    for (const Tensor* t : {&batch.inputs, &batch.targets})
      for (double id : t->to_vector()) {
        CHECK(id != v);
        CHECK(id != w);
        saw_b = saw_b || id == b;
      }
  }
  CHECK(saw_b);  // the training part's last character is reached (as a target)
  const Tensor& vy = d->validation().targets;
  CHECK(d->validation().inputs.size(0) == 2);  // (12 - 1) / 4 windows: a third would read past the end
  CHECK(vy.to_vector().back() == double(v));   // the second window's targets are 'v' x 4; it does not read 'w'+1
}

TEST_CASE("jsonl: examples, ignored positions, file order wrapping, errors naming the line") {
  std::string lines;
  for (int i = 0; i < 10; ++i)
    lines += fmt::format("{{\"input\": [{}, 1, 2], \"target\": [-100, {}, 3]}}\n", i % 5, i % 5);
  const auto path = write_tmp("data.jsonl", lines + "\n");
  auto d = make_dataset({.task = "jsonl", .vocab_size = 5, .seq_len = 3, .path = path, .shuffle = false}, 0);
  CHECK(d->validation().inputs.size(0) == 1);  // the last 10%
  const Batch b = d->next_batch(12);           // 9 training examples: wraps around
  CHECK(row(b.inputs, 0) == std::vector<std::int64_t>{0, 1, 2});
  CHECK(row(b.targets, 0) == std::vector<std::int64_t>{-100, 0, 3});
  CHECK(row(b.inputs, 9) == std::vector<std::int64_t>{0, 1, 2});
  const auto val = write_tmp("val.jsonl", "{\"input\": [1, 1, 1], \"target\": [1, 1, 1]}\n");
  auto dv = make_dataset({.task = "jsonl", .vocab_size = 5, .seq_len = 3, .path = path, .val_path = val}, 0);
  CHECK(dv->validation().inputs.to_vector() == std::vector<double>{1, 1, 1});
  const auto bad = [&](const std::string& line) {
    return make_dataset({.task = "jsonl", .vocab_size = 5, .seq_len = 3, .path = write_tmp("bad.jsonl", lines + line)}, 0);
  };
  CHECK_ERROR(bad("{oops\n"), "bad.jsonl:11: not a JSON object");
  CHECK_ERROR(bad(std::string("{\"input\": [1, 2, 3], \"target\": [1, 2, 3]}\0{trailing\n", 50)), "bad.jsonl:11:42: a NUL byte in the line");
  CHECK_ERROR(bad("{\"input\": [1, 2], \"target\": [1, 2, 3]}\n"), "bad.jsonl:11: \"input\" has 2 tokens, expected data.seq_len = 3");
  CHECK_ERROR(bad("{\"input\": [1, 2, 9], \"target\": [1, 2, 3]}\n"), "bad.jsonl:11: \"input\"[2] = 9 is out of range for data.vocab_size = 5");
  CHECK_ERROR(bad("{\"input\": [1, 2, 3], \"target\": [1, -7, 3]}\n"), "\"target\"[1] = -7 is out of range");
  CHECK_ERROR(bad("{\"input\": [1, 2, 3]}\n"), "bad.jsonl:11: \"target\" must be an array of token ids");
  CHECK_ERROR(bad("{\"input\": [1, \"a\", 3], \"target\": [1, 2, 3]}\n"), "\"input\"[1] is not an integer");
  // 2^64 - 100 would wrap to -100 (an ignored position) if read as int64.
  CHECK_ERROR(bad("{\"input\": [1, 2, 3], \"target\": [1, 18446744073709551516, 3]}\n"),
              "\"target\"[1] = 18446744073709551516 is out of range");
  CHECK_ERROR(bad("{\"input\": [1, 2, 3], \"target\": [1, 9223372036854775808, 3]}\n"), "is out of range");
  CHECK_ERROR(bad(std::string("{\"input\": [1, 2, 3],\0 \"target\": [1, 2, 3]}\n", 41)), "bad.jsonl:11:21: a NUL byte in the line");
  // Nothing to learn, or nothing to validate: said at load (a run trained on and reported 1.0 accuracy).
  std::string ignored;
  for (int i = 0; i < 10; ++i) ignored += "{\"input\": [1, 2, 3], \"target\": [-100, -100, -100]}\n";
  CHECK_ERROR(make_dataset({.task = "jsonl", .vocab_size = 5, .seq_len = 3, .path = write_tmp("ign.jsonl", ignored)}, 0),
              "ign.jsonl: every training target is -100 (ignored): there is nothing to learn");
  CHECK_ERROR(make_dataset({.task = "jsonl", .vocab_size = 5, .seq_len = 3, .path = path,
                            .val_path = write_tmp("ignval.jsonl", ignored)}, 0),
              "ignval.jsonl: every validation target is -100 (ignored): nothing could be validated");
  CHECK_ERROR(make_dataset({.task = "jsonl", .vocab_size = 5, .seq_len = 3, .path = "/dev/zero"}, 0),
              "data: data.path: /dev/zero is a character device, not a regular file");
}

TEST_CASE("text: UTF-8 is validated strictly at load, naming the byte offset (B4)") {
  const std::string ok(200, 'a');
  const auto load = [&](const std::string& bad) {
    return make_dataset({.task = "text", .seq_len = 8, .path = write_tmp("utf8.txt", ok + bad + ok)}, 0);
  };
  CHECK_ERROR(load("\xED\xA0\x80"), "invalid UTF-8 at byte 200 (surrogate U+D800)");
  CHECK_ERROR(load("\xF5\x80\x80\x80"), "invalid UTF-8 at byte 200 (U+140000 is above U+10FFFF)");
  CHECK_ERROR(load("\xF4\x90\x80\x80"), "is above U+10FFFF");
  CHECK_ERROR(load("\xC0\xAF"), "invalid UTF-8 at byte 200 (overlong encoding of U+002F)");
  CHECK_ERROR(load("\xE0\x80\xAF"), "overlong encoding");
  CHECK_ERROR(load("\xF0\x80\x80\xAF"), "overlong encoding");
  CHECK_ERROR(load("\xFF"), "invalid UTF-8 at byte 200 (0xFF cannot start a character)");
  CHECK_ERROR(load("\xC3"), "invalid UTF-8 at byte 201 (0x61 is not a continuation byte)");
  CHECK_ERROR(load("\xC3("), "invalid UTF-8 at byte 201 (0x28 is not a continuation byte)");
  // The edges that are valid: U+07FF, U+FFFF, U+10FFFF, U+E000.
  CHECK_NOTHROW(load("\xDF\xBF\xEF\xBF\xBF\xF4\x8F\xBF\xBF\xEE\x80\x80"));
}

TEST_CASE("token datasets encode space-separated ids") {
  auto d = make_dataset({.task = "copy", .vocab_size = 10}, 0);
  CHECK(d->encode(" 3 1  4 ") == std::vector<std::int64_t>{3, 1, 4});
  CHECK_ERROR(d->encode("3 x"), "'x' is not an integer token id");
  CHECK_ERROR(d->encode("12"), "token id 12 is out of range for vocab_size = 10");
}
