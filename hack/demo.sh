#!/usr/bin/env bash
# Local demo: a real OpenID provider (npm oidc-provider) with a demo user, a
# sample app, and the Gatehouse proxy in front of it, all on 127.0.0.1.
# Ctrl-C stops everything. Run it with `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

PROXY_PORT=${PROXY_PORT:-4180}
APP_PORT=${APP_PORT:-8080}
IDP_PORT=${IDP_PORT:-5556}
METRICS_PORT=${METRICS_PORT:-9090}
BASE="http://127.0.0.1:${PROXY_PORT}"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

work=$(mktemp -d)
pids=()
cleanup() {
  trap - INT TERM EXIT
  step "Stopping the demo"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup INT TERM EXIT

for port in "$PROXY_PORT" "$APP_PORT" "$IDP_PORT" "$METRICS_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "Port $port on 127.0.0.1 is in use; free it or set PROXY_PORT, APP_PORT, IDP_PORT, METRICS_PORT" >&2
    exit 1
  fi
done

step "Starting the identity provider (oidc-provider) on 127.0.0.1:${IDP_PORT}"
client_secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
IDP_PORT=$IDP_PORT IDP_CLIENT_ID=gatehouse-demo IDP_CLIENT_SECRET=$client_secret \
  IDP_REDIRECT_URIS="${BASE}/_gatehouse/callback" \
  IDP_POST_LOGOUT_REDIRECT_URIS="${BASE}/" \
  node hack/idp/server.mjs >"$work/idp.out" 2>"$work/idp.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^READY ' "$work/idp.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^READY ' "$work/idp.out" || { cat "$work/idp.log" >&2; echo "the IdP did not start" >&2; exit 1; }
issuer=$(sed -n 's/^READY //p' "$work/idp.out")
echo "issuer: $issuer"

step "Starting the sample app on 127.0.0.1:${APP_PORT}"
go build -o "$work/sampleapp" ./hack/sampleapp
"$work/sampleapp" -listen "127.0.0.1:${APP_PORT}" -jwks-url "${BASE}/_gatehouse/jwks.json" \
  -issuer "$BASE" -audience "http://127.0.0.1:${APP_PORT}" 2>"$work/app.log" &
pids+=($!)

step "Starting the Gatehouse proxy on ${BASE}"
head -c 32 /dev/urandom | base64 >"$work/cookie-secret"
printf '%s' "$client_secret" >"$work/client-secret"
args=(
  proxy
  --listen-address "127.0.0.1:${PROXY_PORT}"
  --metrics-address "127.0.0.1:${METRICS_PORT}"
  --upstream "http://127.0.0.1:${APP_PORT}"
  --issuer-url "$issuer"
  --client-id gatehouse-demo
  --client-secret-file "$work/client-secret"
  --redirect-url "${BASE}/_gatehouse/callback"
  --cookie-secret-file "$work/cookie-secret"
  --cookie-secure=false
  --scopes "openid email profile groups"
  --skip-auth-path '^/favicon\.ico$'
)
echo "bin/gatehouse-sidecar ${args[*]}"
bin/gatehouse-sidecar "${args[@]}" 2> >(tee "$work/proxy.log" >&2) &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:${METRICS_PORT}/readyz" 2>/dev/null | grep -q 'identity provider: discovered' && break
  sleep 0.1
done

cat <<MSG

  Gatehouse demo is running.

    Open        ${BASE}/reports
    Sign in as  demo / demo     (groups demo, developers)
           or   alice / alice   (group admins)
    Metrics     http://127.0.0.1:${METRICS_PORT}/metrics

  Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}"
