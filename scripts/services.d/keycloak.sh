# Keycloak (the OIDC provider the PanDA server trusts in production is an IAM; Keycloak
# speaks the same RFCs: 6749 refresh and client-credentials grants, 7009 revocation,
# 7517 JWKS), from Maven Central's keycloak-quarkus-dist, in dev mode on loopback, one PID.
# Keycloak 26 needs Java 21 or newer: the newest JDK under /usr/lib/jvm is used.
# A test realm `opsagent` is imported at each start (the H2 database is wiped first):
#   - client `pandaclient` (public, like panda-client's: device and direct grants, refresh
#     tokens, openid scope so a refresh also returns an id_token);
#   - client `opsagent-robot` (confidential, service account: the client-credentials grant);
#   - user `operator` whose tokens the tests use.
# Refresh tokens rotate (revokeRefreshToken): a refresh token used twice is refused, as a
# lost update between two renewing hosts would be.
# Token lifetimes are short (KEYCLOAK_TOKEN_SECONDS, default 120 s) so renewal is exercised.
KEYCLOAK_VERSION=${KEYCLOAK_VERSION:-26.5.6}
KEYCLOAK_PORT=${KEYCLOAK_PORT:-18080}
KEYCLOAK_TOKEN_SECONDS=${KEYCLOAK_TOKEN_SECONDS:-120}
KEYCLOAK_ADMIN=admin KEYCLOAK_ADMIN_PASSWORD=opsagent-kc-admin
KEYCLOAK_ROBOT_SECRET=opsagent-robot-secret
KEYCLOAK_OPERATOR=operator KEYCLOAK_OPERATOR_PASSWORD=opsagent-operator-pw

keycloak_java_home() {
  local j
  for j in $(ls -d /usr/lib/jvm/*/ 2>/dev/null | sort -rV); do
    local v; v=$("$j/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
    if [ -n "$v" ] && [ "$v" -ge 21 ]; then echo "${j%/}"; return 0; fi
  done
  return 1
}

keycloak_install() {
  local d=$SERVICES/keycloak
  [ -x "$d/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" ] && return 0
  keycloak_java_home >/dev/null || apt_once openjdk-21-jre-headless
  command -v mvn >/dev/null || apt_once maven
  apt_once unzip
  mkdir -p "$d/dist"
  mvn -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" \
    -DoutputDirectory="$d/dist"
  unzip -q -o "$d/dist/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" -d "$d"
}

keycloak_ports() { echo "$KEYCLOAK_PORT"; }

keycloak_realm() {
  cat <<JSON
{
  "realm": "opsagent", "enabled": true,
  "accessTokenLifespan": $KEYCLOAK_TOKEN_SECONDS,
  "ssoSessionIdleTimeout": 86400, "ssoSessionMaxLifespan": 86400,
  "revokeRefreshToken": true, "refreshTokenMaxReuse": 0,
  "clients": [
    {"clientId": "pandaclient", "publicClient": true, "enabled": true,
     "directAccessGrantsEnabled": true, "standardFlowEnabled": false,
     "redirectUris": ["http://127.0.0.1/*"],
     "attributes": {"oauth2.device.authorization.grant.enabled": "true"},
     "defaultClientScopes": ["profile", "email", "roles", "basic"],
     "protocolMappers": [
       {"name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-hardcoded-claim-mapper",
        "config": {"claim.name": "groups", "claim.value": "[\"EIC/production\"]", "jsonType.label": "JSON",
                   "id.token.claim": "true", "access.token.claim": "true", "userinfo.token.claim": "true"}}]},
    {"clientId": "opsagent-robot", "publicClient": false, "enabled": true,
     "secret": "$KEYCLOAK_ROBOT_SECRET", "serviceAccountsEnabled": true,
     "standardFlowEnabled": false, "directAccessGrantsEnabled": false,
     "defaultClientScopes": ["profile", "email", "roles", "basic"],
     "protocolMappers": [
       {"name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-hardcoded-claim-mapper",
        "config": {"claim.name": "groups", "claim.value": "[\"EIC/production\"]", "jsonType.label": "JSON",
                   "id.token.claim": "true", "access.token.claim": "true", "userinfo.token.claim": "true"}}]}
  ],
  "users": [
    {"username": "$KEYCLOAK_OPERATOR", "enabled": true, "emailVerified": true,
     "firstName": "Prod", "lastName": "Operator", "email": "operator@example.org",
     "credentials": [{"type": "password", "value": "$KEYCLOAK_OPERATOR_PASSWORD", "temporary": false}]}
  ]
}
JSON
}

keycloak_start() {
  local d=$SERVICES/keycloak kc java_home
  kc=$d/keycloak-$KEYCLOAK_VERSION
  java_home=$(keycloak_java_home)
  rm -rf "$kc/data/h2" "$kc/data/import" "$kc/data/tmp"; mkdir -p "$kc/data/import" "$d/log"
  keycloak_realm > "$kc/data/import/opsagent-realm.json"
  JAVA_HOME=$java_home KC_BOOTSTRAP_ADMIN_USERNAME=$KEYCLOAK_ADMIN \
    KC_BOOTSTRAP_ADMIN_PASSWORD=$KEYCLOAK_ADMIN_PASSWORD \
    JAVA_OPTS_KC_HEAP="-Xms64m -Xmx512m" \
    setsid "$kc/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$KEYCLOAK_PORT" \
      --import-realm --health-enabled=false > "$d/log/keycloak.log" 2>&1 &
  echo $! > "$RUN/keycloak.pid"
  # kc.sh execs java, so the PID is the JVM's.  Ready when the realm's discovery answers.
  local deadline=$((SECONDS + 240))
  until curl -fsS "http://127.0.0.1:$KEYCLOAK_PORT/realms/opsagent/.well-known/openid-configuration" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$RUN/keycloak.pid")" 2>/dev/null; then
      echo "keycloak exited; see $d/log/keycloak.log" >&2; tail -20 "$d/log/keycloak.log" >&2; return 1
    fi
    [ $SECONDS -lt $deadline ] || { echo "keycloak not ready after 240 s" >&2; return 1; }
    sleep 0.5
  done
}

keycloak_env() {
  echo "KEYCLOAK_URL=http://127.0.0.1:$KEYCLOAK_PORT"
  echo "KEYCLOAK_ISSUER=http://127.0.0.1:$KEYCLOAK_PORT/realms/opsagent"
  echo "KEYCLOAK_ADMIN=$KEYCLOAK_ADMIN"
  echo "KEYCLOAK_ADMIN_PASSWORD=$KEYCLOAK_ADMIN_PASSWORD"
  echo "KEYCLOAK_CLIENT_ID=pandaclient"
  echo "KEYCLOAK_ROBOT_ID=opsagent-robot"
  echo "KEYCLOAK_ROBOT_SECRET=$KEYCLOAK_ROBOT_SECRET"
  echo "KEYCLOAK_OPERATOR=$KEYCLOAK_OPERATOR"
  echo "KEYCLOAK_OPERATOR_PASSWORD=$KEYCLOAK_OPERATOR_PASSWORD"
  echo "KEYCLOAK_TOKEN_SECONDS=$KEYCLOAK_TOKEN_SECONDS"
}
