"""Writes the text bench's inputs: sentences of 8 to 32 tokens (as all-MiniLM-L6-v2's
tokenizer counts them, [CLS] and [SEP] included) from the held-out BBC News articles of
scripts/fetch-bbc-news.sh, as JSON Lines ({"text": ...}) for `confidant bench --input-jsonl`.

Each article's text (title, ". ", first paragraph) is split after ".", "!" or "?" followed by
a space and an upper-case letter or a quote; a sentence is kept when it has 8 to 32 tokens
and no other sentence with the same text was kept. The sample is drawn with Python's
`random.Random(SEED)` from the kept sentences in file order, so the same files give the same
sentences. The count (default 256) is a multiple of 32, so that a bench pool of batch 1 or
32 sends every sentence equally often (src/loadgen/target.rs, `Requests::of_texts`).

Usage: make_sentences.py --csv DIR/test.csv --tokenizer DIR/tokenizer.json --out FILE
       [--count 256] [--seed 19]
"""

import argparse
import collections
import csv
import json
import random
import re
import sys

from tokenizers import Tokenizer

MIN_TOKENS = 8
MAX_TOKENS = 32
SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--seed", type=int, default=19)
    a = ap.parse_args()
    tok = Tokenizer.from_file(a.tokenizer)
    tok.no_truncation()
    tok.no_padding()
    seen = set()
    kept = []
    with open(a.csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for s in SPLIT.split(row["text"]):
                s = s.strip()
                if not s or s in seen:
                    continue
                n = len(tok.encode(s).ids)
                if MIN_TOKENS <= n <= MAX_TOKENS:
                    seen.add(s)
                    kept.append((s, n))
    if len(kept) < a.count:
        sys.exit(f"only {len(kept)} sentences of {MIN_TOKENS}-{MAX_TOKENS} tokens")
    sample = random.Random(a.seed).sample(kept, a.count)
    with open(a.out, "w", encoding="utf-8") as f:
        for s, _ in sample:
            f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")
    lengths = sorted(n for _, n in sample)
    hist = collections.Counter((n - 1) // 8 for n in lengths)
    print(
        f"sentences: {a.count} of {len(kept)} with {MIN_TOKENS}-{MAX_TOKENS} tokens "
        f"(seed {a.seed}); tokens min {lengths[0]}, median {lengths[len(lengths) // 2]}, "
        f"max {lengths[-1]}, mean {sum(lengths) / len(lengths):.1f}; "
        + ", ".join(f"{8 * k + 1}-{8 * k + 8}: {hist[k]}" for k in sorted(hist))
    )


if __name__ == "__main__":
    main()
