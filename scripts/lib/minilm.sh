# shellcheck shell=bash
# Shared by tests/stock_text_clients.sh and benches/peer/run_text.sh (sourced, not run).

# seal_minilm BIN MODEL_DIR WORK: seals all-MiniLM-L6-v2 from MODEL_DIR (scripts/fetch-minilm.sh)
# as the embedding model `minilm` (purpose `search`, mean pooling, normalized, 256 tokens,
# truncating) with a fresh publisher key. Writes WORK/minilm.json, WORK/keys/,
# WORK/minilm.sealed and WORK/minilm.dek.
seal_minilm() {
    local bin=$1 model_dir=$2 work=$3
    cat >"$work/minilm.json" <<'JSON'
{"id": "minilm", "version": "1.0.0", "purposes": ["search"],
 "architecture": {"kind": "bert", "task": "embedding", "pooling": "mean", "normalize": true,
                  "max_tokens": 256, "truncation": "truncate"}}
JSON
    "$bin" keygen --out "$work/keys" >/dev/null
    "$bin" seal --hf-dir "$model_dir" --config "$work/minilm.json" \
        --signing-key "$work/keys/publisher.key" --out "$work/minilm.sealed" \
        --key-out "$work/minilm.dek" >/dev/null
}
