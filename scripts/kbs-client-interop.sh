#!/usr/bin/env bash
# Live interop in reverse: Trustee's own client, `kbs-client` (tools/kbs-client in Trustee,
# built on guest-components' `kbs_protocol`), against `confidant broker serve`, on loopback.
#
#   scripts/kbs-client-interop.sh KBS_CLIENT_BINARY
#
# KBS_CLIENT_BINARY is Trustee's `kbs-client` built without TEE attesters (its default
# features), so that kbs_protocol falls back to its `sample` attester (docs/broker.md,
# "Checked live with Trustee's kbs-client"). The script:
#   1. starts `confidant broker serve` on 127.0.0.1 (HTTPS, its self-signed certificate) and,
#      in front of it, a recording relay (scripts/kbs-recorder.py) with the same certificate,
#      which writes every request and response; kbs-client talks to the relay;
#   2. admin, with kbs-client: `set-resource` without a token is refused (401); with the
#      broker's admin key as the bearer token it stores a random resource (200);
#      `set-resource-policy` (Trustee's Rego) is refused with 400 naming this broker's
#      per-resource TOML policy;
#   3. `get-resource` before the resource has a release policy: kbs_protocol first tries the
#      resource without a session (401 TokenNotFound), then auth 200, attest 200, resource
#      403 PolicyDeny, and kbs-client fails;
#   4. a release policy that admits the sample evidence (allow_simulated, measurements "any")
#      is set with `confidant broker set-policy`;
#   5. `get-resource` must print exactly the stored bytes (auth, attest, resource: 200, 200,
#      200; the JWE decrypted by kbs_protocol);
#   6. `attest` must print this broker's ES256 token (tee "sample"); `get-resource
#      --attestation-token` (Trustee's passport mode, a bearer token and no cookie) is refused
#      401 saying that this broker releases on an attested session's cookie only;
#   7. `get-resource` of a path whose policy admits the session but that holds nothing: 404;
#   8. `delete-resource` (admin) removes the resource: 200, then `get-resource` gets 404;
#   9. prints the transcript (method, path, status, error type of every exchange) and checks
#      it against the exact sequence expected.
# Any failed step exits non-zero (it never skips). Without KBS_CLIENT_BINARY it prints this
# usage and exits 2.
#
# Environment:
#   CONFIDANT_BIN            the confidant binary [default: cargo build, then target/debug/confidant]
#   KBS_CLIENT_INTEROP_LOGS  a directory to copy the logs and the recorded exchanges into
# Needs: bash, python3, openssl, coreutils.
set -Eeuo pipefail
# shellcheck source=scripts/lib/interop.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/interop.sh"

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    usage
    exit 2
fi
KBS_CLIENT=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STEP="setup"

KBS_CLIENT=$(absolute_executable "$KBS_CLIENT" KBS_CLIENT_BINARY)
for tool in python3 openssl; do
    command -v "$tool" > /dev/null || fail "$tool is needed"
done

CONFIDANT=$(confidant_binary)

T=$(mktemp -d "${TMPDIR:-/tmp}/kbs-client-interop.XXXXXX")
chmod 700 "$T"
BROKER_PID=""
RELAY_PID=""

cleanup() {
    local rc=$?
    stop_pid "$RELAY_PID"
    stop_pid "$BROKER_PID"
    show_logs_on_failure "$rc" "$T"
    if [[ -n ${KBS_CLIENT_INTEROP_LOGS:-} ]]; then
        mkdir -p "$KBS_CLIENT_INTEROP_LOGS"
        cp "$T"/*.log "$T"/exchanges.jsonl "$KBS_CLIENT_INTEROP_LOGS"/ 2> /dev/null || true
    fi
    rm -rf "$T"
    if [[ $rc -eq 0 ]]; then
        say "PASS: Trustee's kbs-client ($KBS_CLIENT) got the resource from confidant broker serve"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR


# ---- 1. the broker and the recording relay ----
step "start confidant broker serve and the recording relay"
BROKER_PORT=$(free_port)
"$CONFIDANT" broker serve --data-dir "$T/broker" --listen "127.0.0.1:$BROKER_PORT" > "$T/broker.log" 2>&1 &
BROKER_PID=$!
for i in $(seq 1 120); do
    grep -q 'confidant broker: listening on https://' "$T/broker.log" && break
    kill -0 "$BROKER_PID" 2> /dev/null || fail "the broker exited at start"
    [[ $i -lt 120 ]] || fail "the broker did not listen within 60 s"
    sleep 0.5
done
CERT=$T/broker/tls/cert.pem
ADMIN_KEY=$T/broker/admin.key
BROKER=https://127.0.0.1:$BROKER_PORT
RELAY_PORT=$(free_port)
EXCHANGES=$T/exchanges.jsonl
: > "$EXCHANGES"
python3 "$ROOT/scripts/kbs-recorder.py" --listen "$RELAY_PORT" --cert "$CERT" \
    --key "$T/broker/tls/key.pem" --upstream "$BROKER" --ca "$CERT" --out "$EXCHANGES" \
    > "$T/relay.log" 2>&1 &
RELAY_PID=$!
for i in $(seq 1 60); do
    grep -q 'relay listening' "$T/relay.log" && break
    kill -0 "$RELAY_PID" 2> /dev/null || fail "the relay exited at start"
    [[ $i -lt 60 ]] || fail "the relay did not listen within 30 s"
    sleep 0.5
done
URL=https://127.0.0.1:$RELAY_PORT
say "   broker $BROKER, kbs-client talks to the relay at $URL"

# kbs-client, run in $T with HOME=$T: no admin token is found unless one is given, no TEE
# attester is compiled in (the sample attester answers), no sample device.
N=0
kc() {
    N=$((N + 1))
    (cd "$T" && env -u ENABLE_SAMPLE_DEVICE HOME="$T" RUST_LOG=info RUST_BACKTRACE=0 \
        "$KBS_CLIENT" --url "$URL" --cert-file "$CERT" "$@" > "$T/kc-$N.out" 2> "$T/kc-$N.log")
}
kc_out() { cat "$T/kc-$N.out"; }

# How many exchanges are recorded; the exchanges since mark M as "METHOD PATH STATUS [TYPE]".
mark() { wc -l < "$EXCHANGES"; }
since() {
    python3 - "$EXCHANGES" "$1" << 'EOF'
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()[int(sys.argv[2]):]
for line in lines:
    r = json.loads(line)
    kind = ""
    try:
        kind = json.loads(r["response"]["body"]).get("type", "").rsplit("/", 1)[-1]
    except (ValueError, AttributeError):
        pass
    path = r["request"]["path"].split("?")[0]
    print(f'{r["request"]["method"]} {path} {r["response"]["status"]} {kind}'.rstrip())
EOF
}
# expect_since M EXPECTED...: the exchanges since M are exactly EXPECTED (one per line).
expect_since() {
    local m=$1
    shift
    local got want
    got=$(since "$m")
    want=$(printf '%s\n' "$@")
    if [[ $got != "$want" ]]; then
        printf 'expected exchanges:\n%s\ngot:\n%s\n' "$want" "$got" >&2
        fail "the exchanges differ from the expected ones"
    fi
    printf '%s\n' "$got" | sed 's/^/   /'
}

RES=default/test/kbs-client
head -c 48 /dev/urandom > "$T/secret.bin"
SECRET_B64=$(base64 -w0 < "$T/secret.bin")

# ---- 2. admin calls ----
step "kbs-client set-resource without an admin token is refused"
M=$(mark)
if kc config set-resource --path "$RES" --resource-file "$T/secret.bin"; then
    fail "set-resource without a token succeeded"
fi
expect_since "$M" "POST /kbs/v0/resource/$RES 401 AdminAuth"

step "kbs-client set-resource with the broker's admin key as the bearer token"
M=$(mark)
kc config --admin-token-file "$ADMIN_KEY" set-resource --path "$RES" --resource-file "$T/secret.bin" \
    || fail "set-resource failed: $(cat "$T/kc-$N.log")"
expect_since "$M" "POST /kbs/v0/resource/$RES 200"

step "kbs-client set-resource-policy (Rego) is refused: release policies here are per resource, in TOML"
M=$(mark)
if kc config --admin-token-file "$ADMIN_KEY" set-resource-policy --allow-all; then
    fail "set-resource-policy (Rego) succeeded"
fi
expect_since "$M" "POST /kbs/v0/resource-policy 400 InvalidRequest"
grep -q 'resource-policy/<repository>/<type>/<tag>' "$T/kc-$N.log" \
    || fail "the refusal does not name the per-resource policy endpoint: $(cat "$T/kc-$N.log")"

# ---- 3. no release policy yet ----
step "kbs-client get-resource before a release policy is set: attested, then refused"
M=$(mark)
if kc get-resource --path "$RES"; then
    fail "get-resource succeeded without a release policy"
fi
expect_since "$M" "GET /kbs/v0/resource/$RES 401 TokenNotFound" "POST /kbs/v0/auth 200" \
    "POST /kbs/v0/attest 200" "GET /kbs/v0/resource/$RES 403 PolicyDeny"

# ---- 4. a release policy for the sample evidence ----
step "confidant broker set-policy: admit the sample evidence (development only)"
cat > "$T/release.toml" << 'EOF'
# Development only: admits Trustee's sample evidence (no TEE, signed by nobody).
measurements = "any"
i_understand_this_accepts_any_guest = true
allow_simulated = true
EOF
for path in "$RES" default/test/absent; do
    "$CONFIDANT" broker set-policy --broker "$BROKER" --broker-ca "$CERT" --admin-key "$ADMIN_KEY" \
        --path "$path" --policy "$T/release.toml" >> "$T/confidant.log" 2>&1 \
        || fail "set-policy $path failed"
done

# ---- 5. the resource ----
step "kbs-client get-resource: the exact bytes stored"
M=$(mark)
kc get-resource --path "$RES" || fail "get-resource failed: $(tail -n 5 "$T/kc-$N.log")"
[[ $(kc_out | tr -d '\n') == "$SECRET_B64" ]] \
    || fail "kbs-client printed $(kc_out), not the stored resource $SECRET_B64"
expect_since "$M" "GET /kbs/v0/resource/$RES 401 TokenNotFound" "POST /kbs/v0/auth 200" \
    "POST /kbs/v0/attest 200" "GET /kbs/v0/resource/$RES 200"
grep -q 'Sample Attester will be used' "$T/kc-$N.log" \
    || fail "kbs-client did not use its sample attester (is it built with a TEE attester?)"

# ---- 6. attestation only ----
step "kbs-client attest: this broker's token"
M=$(mark)
kc attest || fail "attest failed: $(tail -n 5 "$T/kc-$N.log")"
kc_out | python3 -c '
import base64, json, sys
token = sys.stdin.read().strip()
head, claims, sig = token.split(".")
pad = lambda s: s + "=" * (-len(s) % 4)
h = json.loads(base64.urlsafe_b64decode(pad(head)))
c = json.loads(base64.urlsafe_b64decode(pad(claims)))
assert h["alg"] == "ES256", h
assert c["iss"] == "confidant-broker" and c["tee"] == "sample" and c["exp"] > c["iat"], c
print("   token: ES256, iss", c["iss"], "tee", c["tee"], "valid", c["exp"] - c["iat"], "s")
' || fail "attest printed no valid token: $(kc_out)"
expect_since "$M" "POST /kbs/v0/auth 200" "POST /kbs/v0/attest 200"

step "kbs-client get-resource --attestation-token (passport mode): refused, cookie sessions only"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/tee.pem" 2> /dev/null
kc attest --tee-key-file "$T/tee.pem" || fail "attest --tee-key-file failed: $(tail -n 5 "$T/kc-$N.log")"
kc_out > "$T/token.jwt"
M=$(mark)
if kc get-resource --path "$RES" --attestation-token "$T/token.jwt" --tee-key-file "$T/tee.pem"; then
    fail "get-resource with a bearer token succeeded"
fi
grep -q 'not on a bearer token' "$T/kc-$N.log" \
    || fail "the refusal does not say why: $(tail -n 5 "$T/kc-$N.log")"
# kbs_protocol's token client retries twice with its test token provider's tokens.
expect_since "$M" "GET /kbs/v0/resource/$RES 401 TokenNotFound" \
    "GET /kbs/v0/resource/$RES 401 TokenNotFound" "GET /kbs/v0/resource/$RES 401 TokenNotFound"

# ---- 7. a path the policy admits but that holds nothing ----
step "kbs-client get-resource of an empty path the policy admits: 404"
M=$(mark)
if kc get-resource --path default/test/absent; then
    fail "get-resource of an empty path succeeded"
fi
grep -q 'Not Found' "$T/kc-$N.log" || fail "kbs-client did not report Not Found: $(tail -n 3 "$T/kc-$N.log")"
expect_since "$M" "GET /kbs/v0/resource/default/test/absent 401 TokenNotFound" \
    "POST /kbs/v0/auth 200" "POST /kbs/v0/attest 200" \
    "GET /kbs/v0/resource/default/test/absent 404 ResourceNotFound"

# ---- 8. delete ----
step "kbs-client delete-resource (admin), then get-resource: 404"
M=$(mark)
kc config --admin-token-file "$ADMIN_KEY" delete-resource --path "$RES" \
    || fail "delete-resource failed: $(cat "$T/kc-$N.log")"
if kc get-resource --path "$RES"; then
    fail "get-resource after delete-resource succeeded"
fi
expect_since "$M" "DELETE /kbs/v0/resource/$RES 200" "GET /kbs/v0/resource/$RES 401 TokenNotFound" \
    "POST /kbs/v0/auth 200" "POST /kbs/v0/attest 200" "GET /kbs/v0/resource/$RES 404 ResourceNotFound"

# ---- 9. the transcript ----
step "transcript (every exchange kbs-client made, as the relay recorded it)"
since 0 | sed 's/^/   /'
grep -q 'broker: resource released' "$T/broker.log" || fail "the broker did not log the release"
