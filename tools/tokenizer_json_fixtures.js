#!/usr/bin/env node
// Writes tests/fixtures/tokenizer_json.json: tokenizer.json configurations as today's small models ship them, built
// over GPT-2's vocabulary and merges (tests/fixtures/gpt2), and the ids Hugging Face's tokenizers gives a set of
// texts under each (npm @huggingface/tokenizers: a pure JavaScript implementation, independent of qkv). The test
// builds the same tokenizer.json files and compares. Neither package is needed to build or test.
//   cd /tmp/ref && npm install -E @huggingface/tokenizers@0.2.0
//   NODE_PATH=/tmp/ref/node_modules node tools/tokenizer_json_fixtures.js
const fs = require("fs");
const path = require("path");
const { Tokenizer } = require("@huggingface/tokenizers");

const root = path.join(__dirname, "..");
const encoder = JSON.parse(fs.readFileSync(path.join(root, "tests/fixtures/gpt2/encoder.json"), "utf8"));
const merges = fs.readFileSync(path.join(root, "tests/fixtures/gpt2/vocab.bpe"), "utf8").split("\n").slice(1).filter((l) => l.length > 0);

const LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const added = (id, content, special) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
const byteLevel = (useRegex) => ({ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: useRegex });

// The sections besides the model; "merges" says how model.merges is spelled, "ignore_merges" the model's flag.
const cases = {
  llama3: {
    merges: "pairs", ignore_merges: true,
    added_tokens: [added(50257, "<|begin_of_text|>", true), added(50258, "<|end_of_text|>", true), added(50259, "<tool>", false)],
    normalizer: null,
    pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: LLAMA3 }, behavior: "Isolated", invert: false }, byteLevel(false)] },
    post_processor: { type: "Sequence", processors: [{ type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [50257], tokens: ["<|begin_of_text|>"] } } }] },
    decoder: byteLevel(true),
  },
  qwen2: {
    merges: "strings", ignore_merges: false,
    added_tokens: [added(50256, "<|endoftext|>", true), added(50257, "<|im_start|>", true), added(50258, "<|im_end|>", true)],
    normalizer: { type: "NFC" },
    pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: QWEN2 }, behavior: "Isolated", invert: false }, byteLevel(false)] },
    post_processor: byteLevel(false),
    decoder: byteLevel(true),
  },
  smollm2: {
    merges: "strings", ignore_merges: false,
    added_tokens: [added(50256, "<|endoftext|>", true), added(50257, "<|im_start|>", true), added(50258, "<|im_end|>", true)],
    normalizer: null,
    pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Digits", individual_digits: true }, byteLevel(true)] },
    post_processor: byteLevel(false),
    decoder: byteLevel(true),
  },
};

function tokenizerJson(c) {
  const vocab = { ...encoder };
  for (const a of c.added_tokens) vocab[a.content] = a.id;
  return {
    version: "1.0", truncation: null, padding: null, added_tokens: c.added_tokens, normalizer: c.normalizer,
    pre_tokenizer: c.pre_tokenizer, post_processor: c.post_processor, decoder: c.decoder,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: c.ignore_merges, vocab,
      merges: c.merges === "pairs" ? merges.map((m) => m.split(" ")) : merges },
  };
}

// Texts: hard cases, then random strings drawn (seeded) from many scripts, marks, digits and blanks.
const texts = [
  "Hello world", "I'm you're HE'S SHE'D we'LL They've it's 'S 'd", "DON'T don't o'clock rock'n'roll",
  "x = 12345678901234567890; y = 3.14159e-10", "1,000,000 and 20 24 365 ٣٤٥ １２３ ⅻ ²³", "   leading   and\ttabs\t\t",
  "windows\r\nline\r\n\r\nends\r\n", "\n\n\n\n  \n \t\n", "Café Cafe\u0301 e\u0301\u0302 o\u0308\u0304 A\u030a \u212b \u1e9b\u0323",
  "한국어 \u1100\u1161\u11a8 \uac00\u11a8 텍스트", "日本語のテキストと漢字、中文字符，", "emoji 🙂🎉👍🏽 family 👨‍👩‍👧 flags 🇺🇸",
  "<|begin_of_text|>Hello<|end_of_text|> <tool>call</tool> <|im_start|>user\nhi<|im_end|>", "<|endoftext|><|endoftext|>x",
  "a<|im_start|b <|begin_of_text <|end_of_text|", "Ἀθῆναι Ελληνικά Русский текст العربية עברית हिन्दी ภาษาไทย",
  "\u00a0nbsp\u3000ideographic\u2003em\u200bzw\ufeffbom", "tab\u000bvt\u000cff\u0085nel\u2028ls",
];
let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const pools = [[0x20, 0x7e], [0xa0, 0x24f], [0x300, 0x36f], [0x370, 0x3ff], [0x400, 0x4ff], [0x600, 0x6ff], [0x900, 0x97f],
  [0x1100, 0x11ff], [0x3040, 0x30ff], [0x4e00, 0x4fff], [0xac00, 0xad00], [0xff00, 0xffef], [0x1f300, 0x1f64f],
  [0x2000, 0x206f], [0x660, 0x669], [0x30, 0x39]];
for (let n = 0; n < 300; ++n) {
  let s = "";
  const len = 1 + Math.floor(rand() * 24);
  for (let i = 0; i < len; ++i) {
    const r = rand();
    if (r < 0.15) s += " ";
    else if (r < 0.2) s += ["\n", "\t", "\r\n", "  ", "'s", "'T"][Math.floor(rand() * 6)];
    else {
      const [lo, hi] = pools[Math.floor(rand() * pools.length)];
      const cp = lo + Math.floor(rand() * (hi - lo + 1));
      if (cp >= 0xd800 && cp <= 0xdfff) continue;
      s += String.fromCodePoint(cp);
    }
  }
  texts.push(s);
}

const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(require.resolve("@huggingface/tokenizers")), "..", "package.json"), "utf8"));
const out = { tool: "tools/tokenizer_json_fixtures.js", package: "@huggingface/tokenizers@" + pkg.version, cases: {}, texts, ids: {} };
// tokenizers' Digits splits on char::is_numeric (Unicode's N*: ٣, １, ⅻ, ²), this package's on \d (ASCII 0-9 only):
// the expected ids come from the same package with Digits spelled as the Split it is in tokenizers (Rust), and the
// texts where the package's own Digits differs are listed.
const asRust = (p) => p.type === "Digits"
  ? { type: "Split", pattern: { Regex: p.individual_digits ? "\\p{N}" : "\\p{N}+" }, behavior: "Isolated", invert: false }
  : p.type === "Sequence" ? { ...p, pretokenizers: p.pretokenizers.map(asRust) } : p;
const encodeAll = (tok) => texts.map((t) => Array.from(tok.encode(t).ids).map(Number));
out.digits_differ = {};
for (const [name, c] of Object.entries(cases)) {
  out.cases[name] = c;
  const own = encodeAll(new Tokenizer(tokenizerJson(c), {}));
  out.ids[name] = encodeAll(new Tokenizer(tokenizerJson({ ...c, pre_tokenizer: asRust(c.pre_tokenizer) }), {}));
  out.digits_differ[name] = texts.map((t, i) => i).filter((i) => JSON.stringify(own[i]) !== JSON.stringify(out.ids[name][i]));
}
fs.writeFileSync(path.join(root, "tests/fixtures/tokenizer_json.json"), JSON.stringify(out) + "\n");
console.log(`wrote tests/fixtures/tokenizer_json.json: ${texts.length} texts x ${Object.keys(cases).length} tokenizers`);
