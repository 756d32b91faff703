#!/usr/bin/env node
// Writes tests/fixtures/gpt2_unicode.json: for every block of 4096 code points, the FNV-1a hash of the ids that
// OpenAI's tiktoken (npm @dqbd/tiktoken, its Rust core in WebAssembly) gives a text holding each of the block's code
// points in several contexts (tests/datasets/test_bpe.cpp builds the same text). Not needed to build or test.
//   cd /tmp/ref && npm install @dqbd/tiktoken@1.0.22
//   NODE_PATH=/tmp/ref/node_modules node tools/unicode_fixture.js
const fs = require("fs");
const path = require("path");
const { get_encoding } = require("@dqbd/tiktoken");

const kBlock = 4096;
// Each code point c between a letter, a digit, a space, an apostrophe, and alone on a line: its category decides
// which piece it joins.
function blockText(first) {
  let t = "";
  for (let cp = first; cp < first + kBlock && cp < 0x110000; ++cp) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;  // surrogates are not text
    const c = String.fromCodePoint(cp);
    t += "x" + c + c + " " + c + "7" + c + "'s" + c + "!\n" + c + "\n";
  }
  return t;
}

function fnv1a(ids) {  // 64-bit FNV-1a over each id as 4 little-endian bytes
  let h = 0xcbf29ce484222325n;
  for (const id of ids)
    for (let k = 0; k < 4; ++k) {
      h ^= BigInt((id >>> (8 * k)) & 0xff);
      h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
    }
  return h.toString(16).padStart(16, "0");
}

const enc = get_encoding("gpt2");
const blocks = [];
for (let first = 0; first < 0x110000; first += kBlock) blocks.push(fnv1a(enc.encode(blockText(first))));
const out = { tool: "tools/unicode_fixture.js", reference: "@dqbd/tiktoken@1.0.22 gpt2", block: kBlock, hashes: blocks };
fs.writeFileSync(path.join(__dirname, "..", "tests", "fixtures", "gpt2_unicode.json"), JSON.stringify(out) + "\n");
console.log(`wrote ${blocks.length} block hashes to tests/fixtures/gpt2_unicode.json`);
