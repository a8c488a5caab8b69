#!/usr/bin/env bash
# Live interop with an upstream Trustee KBS: runs the whole key-release exchange of
# `confidant serve --broker http://… --tee sample` against the KBS binary given, on loopback.
#
#   scripts/trustee-interop.sh KBS_BINARY
#
# KBS_BINARY is Trustee's `kbs`, built with the built-in attestation service (`--features
# coco-as-builtin`; see docs/broker.md, "Checked live against Trustee"). The script:
#   1. writes a KBS config in a temp dir (plain HTTP on 127.0.0.1, built-in AS, LocalFs
#      storage, admin API behind Ed25519-signed admin JWTs) and starts the KBS;
#   2. checks that the admin API refuses a request without the admin token (401);
#   3. seals the fixture model (tests/fixtures/mlp) and provisions, through Trustee's admin API,
#      its data key at default/models/fixture-softmax and a 32-byte state key at
#      default/state/interop;
#   4. checks that Trustee's default resource policy (which denies sample evidence) releases
#      nothing (`keys create` fails with PolicyDeny), then sets a resource policy that releases
#      default/* to sample evidence;
#   5. `confidant keys create --broker … --tee sample` (state key from Trustee);
#   6. `confidant serve … --tee sample` WITHOUT --without-freshness-anchor must exit non-zero
#      saying that the broker keeps no freshness anchor;
#   7. `confidant serve … --tee sample --without-freshness-anchor` must serve (state key and
#      model key from Trustee, JWEs decrypted), warning NOT CONFIDENTIAL and ROLLBACK
#      PROTECTION OFF at start and at a checkpoint;
#   8. `confidant predict` over TLS must answer the fixture's reference outputs; `predict
#      --policy` must accept the sample evidence only under a policy with allow_simulated;
#   9. restarts the KBS over HTTPS (a certificate from a throw-away CA) on the same storage,
#      and serves again from the same data directory with --broker https://… --broker-ca CA:
#      same keys, same answer;
#  10. tears everything down.
# Any failed step exits non-zero (it never skips). Without KBS_BINARY it prints this usage
# and exits 2.
#
# Environment:
#   CONFIDANT_BIN         the confidant binary [default: cargo build, then target/debug/confidant]
#   TRUSTEE_PORT          the KBS port [default: a free port]
#   TRUSTEE_INTEROP_LOGS  a directory to copy the logs into (kept after the run)
# Needs: bash, curl, openssl (Ed25519), python3, coreutils.
set -Eeuo pipefail
# shellcheck source=scripts/lib/interop.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/interop.sh"

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    usage
    exit 2
fi
KBS=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=$ROOT/tests/fixtures/mlp
STEP="setup"

KBS=$(absolute_executable "$KBS" KBS_BINARY)
for tool in curl openssl python3; do
    command -v "$tool" > /dev/null || fail "$tool is needed"
done

CONFIDANT=$(confidant_binary)

T=$(mktemp -d "${TMPDIR:-/tmp}/trustee-interop.XXXXXX")
chmod 700 "$T"
KBS_PID=""
SERVE_PID=""

cleanup() {
    local rc=$?
    stop_pid "$SERVE_PID"
    stop_pid "$KBS_PID"
    show_logs_on_failure "$rc" "$T"
    if [[ -n ${TRUSTEE_INTEROP_LOGS:-} ]]; then
        mkdir -p "$TRUSTEE_INTEROP_LOGS"
        cp "$T"/*.log "$TRUSTEE_INTEROP_LOGS"/ 2> /dev/null || true
    fi
    rm -rf "$T"
    if [[ $rc -eq 0 ]]; then
        say "PASS: Trustee KBS $KBS released both keys to confidant --tee sample; predict answered"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR

PORT=${TRUSTEE_PORT:-$(free_port)}
URL=http://127.0.0.1:$PORT
DEPLOYMENT=interop

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
CURL_TLS=()

# ---- 1. the KBS ----
step "start the Trustee KBS ($KBS) on $URL"
mkdir -p "$T/storage"
openssl genpkey -algorithm ed25519 -out "$T/admin.key" 2> /dev/null
openssl pkey -in "$T/admin.key" -pubout -out "$T/admin.pub"
cat > "$T/kbs-config.toml" << EOF
# Trustee KBS, loopback interop test (scripts/trustee-interop.sh); NOT for production.
[http_server]
sockets = ["127.0.0.1:$PORT"]
insecure_http = true
worker_count = 2

[attestation_token]
# The built-in AS signs its EAR tokens with an ephemeral key carried in the JWT header.
insecure_header_jwk = true

[attestation_service]
type = "coco_as_builtin"
timeout = 5

[attestation_service.attestation_token_broker]
duration_min = 5

[attestation_service.rvps_config]
type = "BuiltIn"

[admin]
authorization_mode = "AuthenticatedAuthorization"

[admin.authentication.bearer_jwt]
identity_providers = [
    { issuer = "confidant-interop", audience = "kbs-admin", public_key_uri = "$T/admin.pub" },
]

[admin.authorization.regex_acl]
acls = [{ role = "admin", allowed_endpoints = "^/kbs/v0/(resource/.+|resource-policy)$" }]

[storage_backend]
storage_type = "LocalFs"

[storage_backend.backends.local_fs]
dir_path = "$T/storage"

[[plugins]]
name = "resource"
storage_backend_type = "kvstorage"
EOF
# start_kbs CONFIG LOG: starts the KBS and waits for /healthz (curl options after the two).
# Waits until the server started as $SERVE_PID logs its address into LOG (at most 120 s) and
# sets ADDR; fails naming WHAT if it exits or does not serve in time.
wait_serving() {
    local log=$1 what=$2
    ADDR=""
    for i in $(seq 1 240); do
        ADDR=$(sed -n 's|^confidant: serving on https://\([^ ]*\) .*|\1|p' "$log" | head -n 1)
        [[ -z $ADDR ]] || return 0
        kill -0 "$SERVE_PID" 2> /dev/null || fail "$what exited before serving"
        sleep 0.5
    done
    fail "$what did not serve within 120 s"
}

start_kbs() {
    local config=$1 log=$2
    shift 2
    RUST_LOG=info "$KBS" --config-file "$config" > "$log" 2>&1 &
    KBS_PID=$!
    for i in $(seq 1 120); do
        if [[ $(curl -s "$@" -o /dev/null -w '%{http_code}' "$URL/healthz" || true) == 200 ]]; then
            break
        fi
        kill -0 "$KBS_PID" 2> /dev/null || fail "the KBS exited at start"
        [[ $i -lt 120 ]] || fail "the KBS did not answer /healthz within 60 s"
        sleep 0.5
    done
    printf '   KBS %s\n' "$(grep -m1 -o 'version: [^ ]*' "$log" || echo '(no version in its log)')"
}
start_kbs "$T/kbs-config.toml" "$T/kbs.log"

# An Ed25519-signed admin JWT (EdDSA; iss, aud and role checked by the KBS).
admin_token() {
    local now header claims
    now=$(date +%s)
    header=$(printf '{"alg":"EdDSA","typ":"JWT"}' | b64url)
    claims=$(printf '{"iss":"confidant-interop","aud":"kbs-admin","role":"admin","iat":%d,"exp":%d}' \
        "$now" "$((now + 600))" | b64url)
    printf '%s.%s' "$header" "$claims" > "$T/jwt.in"
    printf '%s.%s.%s' "$header" "$claims" \
        "$(openssl pkeyutl -sign -inkey "$T/admin.key" -rawin -in "$T/jwt.in" | b64url)"
}

# admin_post PATH FILE [CONTENT_TYPE]: POST FILE to the admin API; prints the HTTP status.
admin_post() {
    curl -sS "${CURL_TLS[@]}" -o "$T/admin-answer" -w '%{http_code}' -X POST \
        -H "Authorization: Bearer $(admin_token)" \
        -H "Content-Type: ${3:-application/octet-stream}" \
        --data-binary "@$2" "$URL/kbs/v0/$1"
}

# ---- 2. admin authentication ----
step "the admin API refuses a request without the admin token"
printf 'not a key' > "$T/junk"
status=$(curl -sS -o "$T/admin-answer" -w '%{http_code}' -X POST --data-binary "@$T/junk" \
    "$URL/kbs/v0/resource/default/models/fixture-softmax")
[[ $status == 401 ]] || fail "an admin POST without a token got HTTP $status, not 401: $(cat "$T/admin-answer")"

# ---- 3. seal and provision ----
step "seal the fixture model and provision its data key and the state key at the KBS"
"$CONFIDANT" keygen --out "$T/keys" > /dev/null
"$CONFIDANT" seal --weights "$FIXTURES/weights.safetensors" --config "$FIXTURES/softmax.json" \
    --signing-key "$T/keys/publisher.key" --out "$T/m.sealed" --key-out "$T/m.dek" > "$T/seal.json"
RESOURCE=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["key_resource"])' "$T/seal.json")
[[ $RESOURCE == default/models/fixture-softmax ]] || fail "unexpected key_resource $RESOURCE"
status=$(admin_post "resource/$RESOURCE" "$T/m.dek")
[[ $status == 200 ]] || fail "POST resource/$RESOURCE: HTTP $status $(cat "$T/admin-answer")"
head -c 32 /dev/urandom > "$T/state.key"
status=$(admin_post "resource/default/state/$DEPLOYMENT" "$T/state.key")
[[ $status == 200 ]] || fail "POST resource/default/state/$DEPLOYMENT: HTTP $status $(cat "$T/admin-answer")"
rm -f "$T/m.dek" "$T/state.key"

state_source=(--broker "$URL" --tee sample --deployment "$DEPLOYMENT")

# ---- 4. resource policy ----
step "Trustee's default resource policy releases nothing to sample evidence"
if "$CONFIDANT" keys create --data-dir "$T/denied" --principal nobody "${state_source[@]}" \
    > "$T/denied.out" 2> "$T/denied.log"; then
    fail "keys create got the state key under Trustee's default policy"
fi
grep -q 'PolicyDeny' "$T/denied.log" || fail "keys create failed, but not with PolicyDeny: $(tail -n 3 "$T/denied.log")"

step "set a resource policy releasing default/* to sample evidence (development only)"
cat > "$T/policy.rego" << 'EOF'
package policy

default allow = false

allow if {
	data.plugin == "resource"
	data["resource-path"][0] == "default"
	input["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["sample"]
}
EOF
printf '{"policy":"%s"}' "$(b64url < "$T/policy.rego")" > "$T/policy.json"
status=$(admin_post resource-policy "$T/policy.json" application/json)
[[ $status == 200 ]] || fail "POST resource-policy: HTTP $status $(cat "$T/admin-answer")"

# ---- 5. an API key, in the database encrypted under the state key from Trustee ----
step "confidant keys create --broker $URL --tee sample (state key released by Trustee)"
"$CONFIDANT" keys create --data-dir "$T/data" --principal interop "${state_source[@]}" \
    > "$T/key.json" 2> "$T/keys-create.log"
API_KEY=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["api_key"])' "$T/key.json")

serve_args=(serve --data-dir "$T/data" --listen 127.0.0.1:0 --metrics-listen off --http-listen off
    --model "$T/m.sealed" --publisher-key "$T/keys/publisher.pub" "${state_source[@]}")
export RUST_LOG=info,confidant::keys::client=debug

# ---- 6. no anchor endpoints: refuse without --without-freshness-anchor ----
step "serve without --without-freshness-anchor refuses (Trustee keeps no freshness anchor)"
rc=0
timeout 180 "$CONFIDANT" "${serve_args[@]}" > "$T/serve-anchor-refused.log" 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "serve exited 0 without a freshness anchor"
[[ $rc -ne 124 ]] || fail "serve did not stop within 180 s without a freshness anchor"
grep -q 'keeps no freshness anchor' "$T/serve-anchor-refused.log" ||
    fail "serve exited $rc without naming the missing freshness anchor"
grep -q 'confidant: serving on' "$T/serve-anchor-refused.log" && fail "serve served without a freshness anchor"

# ---- 7. serve ----
step "serve --tee sample --without-freshness-anchor (model key released by Trustee)"
"$CONFIDANT" "${serve_args[@]}" --without-freshness-anchor > "$T/serve.log" 2>&1 &
SERVE_PID=$!
wait_serving "$T/serve.log" serve
for needle in 'NOT CONFIDENTIAL' 'ROLLBACK PROTECTION OFF' \
    'data key released by the broker after attestation'; do
    grep -q "$needle" "$T/serve.log" || fail "the server log lacks \"$needle\""
done

# ---- 8. predict ----
step "confidant predict answers the fixture's reference outputs"
INPUTS=$(python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["inputs"]))' "$FIXTURES/reference.json")
predict=("$CONFIDANT" predict --addr "https://$ADDR" --api-key "$API_KEY" --model fixture-softmax)
"${predict[@]}" --tls-ca "$T/data/tls/cert.pem" --input "$INPUTS" > "$T/predict.json" 2> "$T/predict.log"
python3 - "$T/predict.json" "$FIXTURES/reference.json" << 'EOF' || fail "predict's answer is not the reference"
import json, sys
got = json.load(open(sys.argv[1]))
want = json.load(open(sys.argv[2]))["outputs"]["softmax"]
outputs = got["outputs"]
assert got["model"] == "fixture-softmax", got["model"]
assert len(outputs) == len(want), (len(outputs), len(want))
worst = max(abs(a - b) for row, ref in zip(outputs, want) for a, b in zip(row, ref))
assert all(len(r) == len(w) for r, w in zip(outputs, want))
assert worst < 1e-4, f"largest difference {worst}"
print(f"   {len(outputs)} rows, largest difference from the reference {worst:.2e}")
EOF

step "predict --policy: the sample evidence passes only a policy with allow_simulated"
printf 'measurements = "any"\ni_understand_this_accepts_any_guest = true\nallow_simulated = true\n' > "$T/dev-policy.toml"
printf 'measurements = "any"\ni_understand_this_accepts_any_guest = true\n' > "$T/strict-policy.toml"
"${predict[@]}" --policy "$T/dev-policy.toml" --input "$INPUTS" > /dev/null 2> "$T/predict-dev-policy.log" ||
    fail "predict --policy (allow_simulated) was refused: $(tail -n 3 "$T/predict-dev-policy.log")"
if "${predict[@]}" --policy "$T/strict-policy.toml" --input "$INPUTS" > /dev/null 2> "$T/predict-strict-policy.log"; then
    fail "predict --policy without allow_simulated accepted sample evidence"
fi
grep -qi 'simulated' "$T/predict-strict-policy.log" ||
    fail "the refusal does not name the check: $(tail -n 3 "$T/predict-strict-policy.log")"

step "the server warns at a checkpoint that it is not anchored"
for i in $(seq 1 60); do
    grep -q 'this checkpoint is not anchored' "$T/serve.log" && break
    [[ $i -lt 60 ]] || fail "no checkpoint warning within 30 s"
    sleep 0.5
done

step "transcript (KBS access log)"
grep -o '"[A-Z]* /kbs/v0/[^"]*" [0-9]*' "$T/kbs.log" | sed 's/^/   /'

# ---- 9. the same over HTTPS, restarting on the same storage and data directory ----
step "over HTTPS: restart the KBS with a certificate from a throw-away CA; serve --broker https://… --broker-ca CA"
stop_pid "$SERVE_PID"
SERVE_PID=""
stop_pid "$KBS_PID"
KBS_PID=""
# A throw-away CA and the KBS's certificate from it (a CA certificate cannot be the server's
# own: rustls refuses it as CaUsedAsEndEntity).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=trustee-interop CA" -keyout "$T/kbs-ca.key" -out "$T/kbs-ca.pem" 2> /dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$T/kbs-tls.key" -out "$T/kbs-tls.csr" 2> /dev/null
printf 'subjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\nextendedKeyUsage = serverAuth\n' \
    > "$T/kbs-tls.ext"
openssl x509 -req -in "$T/kbs-tls.csr" -CA "$T/kbs-ca.pem" -CAkey "$T/kbs-ca.key" \
    -CAcreateserial -days 1 -extfile "$T/kbs-tls.ext" -out "$T/kbs-tls.pem" 2> /dev/null
PORT=$(free_port)
URL=https://127.0.0.1:$PORT
sed -e "s|^sockets = .*|sockets = [\"127.0.0.1:$PORT\"]|" \
    -e "s|^insecure_http = true|insecure_http = false\nprivate_key = \"$T/kbs-tls.key\"\ncertificate = \"$T/kbs-tls.pem\"|" \
    "$T/kbs-config.toml" > "$T/kbs-config-tls.toml"
# HTTP/1.1 for the admin calls: over HTTP/2 Trustee's regex ACL sees the absolute URI
# (https://HOST:PORT/kbs/…), which the anchored `^/kbs/…$` rule does not match (401).
CURL_TLS=(--cacert "$T/kbs-ca.pem" --http1.1)
start_kbs "$T/kbs-config-tls.toml" "$T/kbs-tls.log" "${CURL_TLS[@]}"
status=$(admin_post resource-policy "$T/policy.json" application/json)
[[ $status == 200 ]] || fail "POST resource-policy over HTTPS: HTTP $status $(cat "$T/admin-answer")"
"$CONFIDANT" serve --data-dir "$T/data" --listen 127.0.0.1:0 --metrics-listen off --http-listen off \
    --model "$T/m.sealed" --publisher-key "$T/keys/publisher.pub" --broker "$URL" \
    --broker-ca "$T/kbs-ca.pem" --tee sample --deployment "$DEPLOYMENT" \
    --without-freshness-anchor > "$T/serve-tls.log" 2>&1 &
SERVE_PID=$!
wait_serving "$T/serve-tls.log" "serve over HTTPS"
grep -q 'data key released by the broker after attestation' "$T/serve-tls.log" ||
    fail "the server log lacks the key release over HTTPS"
grep -q 'plain HTTP' "$T/serve-tls.log" && fail "the server says the broker is plain HTTP"
"$CONFIDANT" predict --addr "https://$ADDR" --api-key "$API_KEY" --model fixture-softmax \
    --tls-ca "$T/data/tls/cert.pem" --input "$INPUTS" > "$T/predict-tls.json" 2> "$T/predict-tls.log"
python3 - "$T/predict-tls.json" "$T/predict.json" << 'EOF' || fail "predict over the HTTPS-keyed server differs"
import json, sys
assert json.load(open(sys.argv[1]))["outputs"] == json.load(open(sys.argv[2]))["outputs"]
print("   the same answer as before, with the keys released over HTTPS")
EOF
grep -o '"[A-Z]* /kbs/v0/[^"]*" [0-9]*' "$T/kbs-tls.log" | sed 's/^/   /'
