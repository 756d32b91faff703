#!/usr/bin/env bash
# A small llama against the transformer of its size on the license shards (configs/tokens.toml, 300 steps, one
# thread each): the final validation loss and token accuracy of the transformer kind, of model.kind = llama with a
# SwiGLU of the transformer MLP's size tied (the llama default) and untied (as the transformer's head is).
#   bench/learning.sh          about 10 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
QKV=${BUILD:-build}/bin/qkv
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
[ -f runs/licenses-tokens/manifest.json ] || "$QKV" tokenize /usr/share/common-licenses/* --out runs/licenses-tokens
LLAMA=(model.kind=llama model.dropout=0.0 model.kv_heads=2 model.d_ff=352)
for variant in transformer llama-tied llama-untied; do
  case $variant in
    transformer) args=() ;;
    llama-tied) args=("${LLAMA[@]}" model.tie_embeddings=true) ;;
    llama-untied) args=("${LLAMA[@]}" model.tie_embeddings=false) ;;
  esac
  last=$("$QKV" train configs/tokens.toml run.name="learning-$variant" train.threads=1 "${args[@]}" --force | tail -1)
  echo "$variant: $last"
done
