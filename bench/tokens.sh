#!/usr/bin/env bash
# Real-corpus figures (docs/benchmarks.md#tokenizer): GPT-2 encoding MB/s on one thread and on all, qkv tokenize
# throughput, tokenizer training time for 10k merges, training tokens/s and peak RSS on token shards, and peak RSS
# for a 20 MB and a 2 GB token set (synthetic shards). Medians of RUNS runs, run alternately.
# The corpus is MB megabytes of Debian's changelogs (zcat /usr/share/doc/*/changelog*.gz, invalid UTF-8 dropped),
# so every machine builds it offline; its files go to WORK (default /tmp/qkv-bench-tokens, ~2.5 GB).
#   bench/tokens.sh [RUNS] [MB]     e.g. bench/tokens.sh 3 100
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-3}
MB=${2:-100}
WORK=${WORK:-/tmp/qkv-bench-tokens}
QKV=$PWD/$BUILD/bin/qkv
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
. bench/lib.sh  # field, median
mkdir -p "$WORK"
CORPUS=$WORK/corpus.txt
if [ ! -f "$CORPUS" ] || [ "$(stat -c %s "$CORPUS")" -lt $((MB * 1000000 - 4)) ]; then
  find /usr/share/doc -name 'changelog*.gz' | sort | xargs zcat 2>/dev/null | iconv -f UTF-8 -t UTF-8 -c |
    head -c $((MB * 1000000)) | iconv -f UTF-8 -t UTF-8 -c > "$CORPUS" || true
fi
BYTES=$(stat -c %s "$CORPUS")
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; corpus $BYTES bytes"
# Seconds of a command (its output dropped).
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
mbps() { echo "scale=1; $BYTES / 1000000 / $1" | bc -l; }

enc=(); tok1=(); tokn=(); train=()
for ((i = 0; i < RUNS; i++)); do
  enc+=("$(seconds "$QKV" tokenizer encode "$CORPUS")")
  tok1+=("$(seconds "$QKV" tokenize "$CORPUS" --out "$WORK/shards1" --threads 1)")
  rm -f "$WORK/shards1/manifest.json"  # so the next run encodes again
  tokn+=("$(seconds "$QKV" tokenize "$CORPUS" --out "$WORK/shards" --threads "$(nproc)")")
  [ "$i" = $((RUNS - 1)) ] || rm -f "$WORK/shards/manifest.json"
  train+=("$(seconds "$QKV" tokenizer train "$CORPUS" --vocab-size 10257 --out "$WORK/bpe")")
done
m() { printf '%s\n' "$@" | median; }
printf "%-46s %8s s  %7s MB/s\n" "qkv tokenizer encode (GPT-2, 1 thread)" "$(m "${enc[@]}")" "$(mbps "$(m "${enc[@]}")")"
printf "%-46s %8s s  %7s MB/s\n" "qkv tokenize --threads 1" "$(m "${tok1[@]}")" "$(mbps "$(m "${tok1[@]}")")"
printf "%-46s %8s s  %7s MB/s\n" "qkv tokenize --threads $(nproc)" "$(m "${tokn[@]}")" "$(mbps "$(m "${tokn[@]}")")"
printf "%-46s %8s s\n" "qkv tokenizer train --vocab-size 10257 (10k merges)" "$(m "${train[@]}")"

# Training on the shards: configs/tokens.toml's model (d_model 128, 2 layers, batch 16 x 64).
sps=(); rss=()
for ((i = 0; i < RUNS; i++)); do
  out=$(qkv_env "$QKV" bench configs/tokens.toml "data.path=\"$WORK/shards\"" --steps 20 --warmup 3)
  sps+=("$(echo "$out" | field tokens_per_s)"); rss+=("$(echo "$out" | field peak_rss_mb)")
done
echo "training on tokens (configs/tokens.toml): $(m "${sps[@]}") tokens/s, peak RSS $(m "${rss[@]}") MB"

# qkv tokenize on documents of about 1 KB with a separator (TinyStories-like): the same corpus cut into documents.
DOCS=$WORK/docs.txt
[ -f "$DOCS" ] || /usr/bin/python3 - "$CORPUS" "$DOCS" <<'EOF'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write("<|sep|>".join(text[i:i + 1000] for i in range(0, len(text), 1000)))
EOF
docs=()
for ((i = 0; i < RUNS; i++)); do
  rm -rf "$WORK/docshards"
  docs+=("$(seconds "$QKV" tokenize "$DOCS" --out "$WORK/docshards" --doc-separator '<|sep|>')")
done
printf "%-46s %8s s  %7s MB/s\n" "qkv tokenize, 1 KB documents + separator" "$(m "${docs[@]}")" \
  "$(echo "scale=1; $(stat -c %s "$DOCS") / 1000000 / $(m "${docs[@]}")" | bc -l)"

# Peak RSS against the token set's size: synthetic uint16 shards of 10M and 1G tokens (20 MB and 2 GB) beside
# the real folder's tokenizer and manifest. Each shard's header and the manifest carry the tokenizer's hash and the
# shard's FNV-1a checksum (docs/tokens.md#shard-folders), computed by a small helper built here.
FNV=$WORK/fnv1a
[ -x "$FNV" ] || gcc -O2 -x c - -o "$FNV" <<'EOF'
#include <stdint.h>
#include <stdio.h>
int main(int argc, char** argv) {  /* FNV-1a of a shard's tokens (after its 1024-byte header) */
  FILE* f = fopen(argv[1], "rb");
  uint64_t h = 14695981039346656037ull;
  static unsigned char b[1 << 16];
  size_t n;
  if (f == NULL || fseek(f, 1024, SEEK_SET) != 0) return 1;
  while ((n = fread(b, 1, sizeof b, f)) > 0)
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  printf("%016llx\n", (unsigned long long)h);
  return 0;
}
EOF
synth() {  # synth DIR TOKENS
  FNV=$FNV /usr/bin/python3 - "$WORK/shards" "$1" "$2" <<'EOF'
import json, os, random, shutil, struct, subprocess, sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if os.path.exists(os.path.join(out, "manifest.json")):
    sys.exit(0)
shutil.rmtree(out, ignore_errors=True)
shutil.copytree(os.path.join(src, "tokenizer"), os.path.join(out, "tokenizer"))
m = json.load(open(os.path.join(src, "manifest.json")))
random.seed(0)
block = struct.pack("<%dH" % (1 << 20), *(random.randrange(50257) for _ in range(1 << 20)))
shards, left, k = [], n, 0
while left > 0:
    count = min(left, 100_000_000)
    name = "train_%06d.bin" % k
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(bytes(1024))
        for _ in range(count // (1 << 20)):
            f.write(block)
        f.write(block[: 2 * (count % (1 << 20))])
    checksum = int(subprocess.run([os.environ["FNV"], path], capture_output=True, text=True, check=True).stdout, 16)
    tok = int(m["tokenizer"]["hash"], 16)
    with open(path, "r+b") as f:  # llm.c's header, then the tokenizer and the checksum (low words first)
        f.write(struct.pack("<3i4I", 20240520, 1, count, tok & 0xffffffff, tok >> 32, checksum & 0xffffffff, checksum >> 32))
    shards.append({"file": name, "split": "train", "tokens": count, "checksum": "%016x" % checksum})
    left, k = left - count, k + 1
val = [s for s in m["shards"] if s["split"] == "val"]
for s in val:
    shutil.copy(os.path.join(src, s["file"]), os.path.join(out, s["file"]))
m["shards"] = shards + val
m["tokens"]["train"] = n
m["sources"] = []
json.dump(m, open(os.path.join(out, "manifest.json"), "w"), indent=2)
EOF
}
synth "$WORK/synth20mb" 10000000
synth "$WORK/synth2gb" 1000000000
for set in synth20mb synth2gb; do
  rss=()
  for ((i = 0; i < RUNS; i++)); do
    out=$(qkv_env "$QKV" bench configs/tokens.toml "data.path=\"$WORK/$set\"" --steps 20 --warmup 3)
    rss+=("$(echo "$out" | field peak_rss_mb)")
  done
  echo "peak RSS on $set ($(du -sh "$WORK/$set" | cut -f1)): $(m "${rss[@]}") MB"
done
