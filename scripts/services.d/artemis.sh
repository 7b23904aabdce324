# ActiveMQ Artemis (production's broker), beside Classic: STOMP only, loopback only, one PID.
# The binary distribution comes from Maven Central (org.apache.activemq:apache-artemis,
# classifier bin, tar.gz) into $SERVICES/artemis-dist/ by `mvn dependency:copy`; the broker
# instance (`artemis create`) lives in $SERVICES/artemis/instance.  Its configuration is
# rewritten at each start, as Classic's is:
#   - a STOMP acceptor and a STOMP+TLS one (a self-signed key; its certificate is the
#     clients' CA bundle), anycast prefix /queue/, multicast prefix /topic/, the default
#     heart-beat handling of production (a client that asks for no heart-beats is dropped
#     after connectionTtl, 60 s; one that does after twice its interval);
#   - the same three users as Classic (the host, the web tier, an outsider allowed no
#     capability), anonymous refused, every user allowed every broker operation as on
#     Classic (who may call what is the host's allow_users);
#   - the sender stamped in _AMQ_VALIDATED_USER (populate-validated-user), overwriting
#     whatever the client put there;
#   - a queue whose name starts with `exclusive.` is an exclusive queue (one consumer receives,
#     the others stand by): Artemis takes exclusivity from the queue, not from the STOMP
#     SUBSCRIBE (it ignores `activemq.exclusive`); see docs/operations.md "Broker settings".
# ARTEMIS_PERSISTENT=true keeps messages across restarts (the journal, NIO).
ARTEMIS_VERSION=${ARTEMIS_VERSION:-2.40.0}
ARTEMIS_HOST_USER=opsagent ARTEMIS_HOST_PASSWORD=opsagent-host-pw
ARTEMIS_WEB_USER=webtier ARTEMIS_WEB_PASSWORD=opsagent-web-pw
ARTEMIS_OUTSIDER_USER=outsider ARTEMIS_OUTSIDER_PASSWORD=opsagent-outsider-pw
ARTEMIS_STOMP_PORT=${ARTEMIS_STOMP_PORT:-61713}
ARTEMIS_STOMP_SSL_PORT=${ARTEMIS_STOMP_SSL_PORT:-$((ARTEMIS_STOMP_PORT + 1))}

# Where the distribution is unpacked: a services directory of its own (the chaos runs and
# the restart tests use a temporary one) reuses the one of the main services directory
# when ARTEMIS_HOME points there.
artemis_home() { echo "${ARTEMIS_HOME:-$SERVICES/artemis-dist/apache-artemis-$ARTEMIS_VERSION}"; }

artemis_install() {
  local home; home=$(artemis_home)
  [ -x "$home/bin/artemis" ] && return 0
  apt_once default-jre-headless
  command -v mvn >/dev/null || apt_once maven
  local dist=$SERVICES/artemis-dist
  mkdir -p "$dist"
  mvn -B -q dependency:copy \
    -Dartifact="org.apache.activemq:apache-artemis:$ARTEMIS_VERSION:tar.gz:bin" \
    -DoutputDirectory="$dist" -Dmaven.repo.local="$dist/m2"
  tar -xzf "$dist/apache-artemis-$ARTEMIS_VERSION-bin.tar.gz" -C "$dist"
  rm -rf "$dist/m2" "$dist/apache-artemis-$ARTEMIS_VERSION-bin.tar.gz"
  [ -x "$home/bin/artemis" ]
}

artemis_ports() { echo "$ARTEMIS_STOMP_PORT $ARTEMIS_STOMP_SSL_PORT"; }

artemis_start() {
  local d=$SERVICES/artemis home; home=$(artemis_home)
  local inst=$d/instance persistent=${ARTEMIS_PERSISTENT:-false}
  mkdir -p "$d/tls"
  if [ ! -x "$inst/bin/artemis" ]; then
    "$home/bin/artemis" create "$inst" --silent --force --user "$ARTEMIS_HOST_USER" \
      --password "$ARTEMIS_HOST_PASSWORD" --require-login --no-web --no-autotune \
      --no-amqp-acceptor --no-hornetq-acceptor --no-mqtt-acceptor --nio \
      --host 127.0.0.1 > "$d/create.log" 2>&1
  fi
  [ "$persistent" = true ] || rm -rf "$inst/data"
  mkdir -p "$inst/data" "$inst/log" "$inst/tmp"
  if [ ! -f "$d/tls/broker.p12" ]; then
    keytool -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
      -dname "CN=localhost" -ext "SAN=ip:127.0.0.1,dns:localhost" -ext "BC=ca:true" \
      -storetype PKCS12 -keystore "$d/tls/broker.p12" -storepass opsagent-test \
      -keypass opsagent-test >/dev/null 2>&1
    keytool -exportcert -rfc -alias broker -keystore "$d/tls/broker.p12" \
      -storepass opsagent-test -file "$d/tls/ca.pem" >/dev/null 2>&1
  fi
  # Users and roles: the PropertiesLoginModule of `artemis create` (plain passwords: a
  # loopback broker with test data, as Classic's).
  {
    echo "$ARTEMIS_HOST_USER = $ARTEMIS_HOST_PASSWORD"
    echo "$ARTEMIS_WEB_USER = $ARTEMIS_WEB_PASSWORD"
    echo "$ARTEMIS_OUTSIDER_USER = $ARTEMIS_OUTSIDER_PASSWORD"
  } > "$inst/etc/artemis-users.properties"
  {
    echo "hosts = $ARTEMIS_HOST_USER"
    echo "users = $ARTEMIS_HOST_USER,$ARTEMIS_WEB_USER,$ARTEMIS_OUTSIDER_USER"
  } > "$inst/etc/artemis-roles.properties"
  local stomp="protocols=STOMP;anycastPrefix=/queue/;multicastPrefix=/topic/;tcpNoDelay=true"
  stomp+=";connectionTtl=60000;heartBeatToConnectionTtlModifier=2.0"
  stomp+=";tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576"
  local tls="sslEnabled=true;keyStorePath=$d/tls/broker.p12;keyStoreType=PKCS12"
  tls+=";keyStorePassword=opsagent-test"
  local perm
  perm=$(for p in createNonDurableQueue deleteNonDurableQueue createDurableQueue \
           deleteDurableQueue createAddress deleteAddress consume browse send; do
           echo "        <permission type=\"$p\" roles=\"users\"/>"; done)
  cat > "$inst/etc/broker.xml" <<XML
<?xml version="1.0"?>
<configuration xmlns="urn:activemq" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
               xsi:schemaLocation="urn:activemq /schema/artemis-configuration.xsd">
  <core xmlns="urn:activemq:core">
    <name>opsagent-test</name>
    <persistence-enabled>$persistent</persistence-enabled>
    <journal-type>NIO</journal-type>
    <journal-datasync>false</journal-datasync>
    <journal-file-size>10M</journal-file-size>
    <journal-min-files>2</journal-min-files>
    <paging-directory>data/paging</paging-directory>
    <bindings-directory>data/bindings</bindings-directory>
    <journal-directory>data/journal</journal-directory>
    <large-messages-directory>data/large-messages</large-messages-directory>
    <max-disk-usage>100</max-disk-usage>
    <global-max-size>128M</global-max-size>
    <security-enabled>true</security-enabled>
    <populate-validated-user>true</populate-validated-user>
    <acceptors>
      <acceptor name="stomp">tcp://127.0.0.1:$ARTEMIS_STOMP_PORT?$stomp</acceptor>
      <acceptor name="stomp-tls">tcp://127.0.0.1:$ARTEMIS_STOMP_SSL_PORT?$stomp;$tls</acceptor>
    </acceptors>
    <security-settings>
      <security-setting match="#">
$perm
      </security-setting>
    </security-settings>
    <address-settings>
      <address-setting match="#">
        <dead-letter-address>DLQ</dead-letter-address>
        <expiry-address>ExpiryQueue</expiry-address>
        <redelivery-delay>0</redelivery-delay>
        <max-delivery-attempts>10</max-delivery-attempts>
        <address-full-policy>PAGE</address-full-policy>
        <auto-create-queues>true</auto-create-queues>
        <auto-create-addresses>true</auto-create-addresses>
        <auto-delete-queues>false</auto-delete-queues>
        <auto-delete-addresses>false</auto-delete-addresses>
      </address-setting>
      <!-- Exclusive consumers (hot standby): the tests' exclusive queues; production's
           is <address-setting match="epicprod.ops">. -->
      <address-setting match="exclusive.#">
        <default-exclusive-queue>true</default-exclusive-queue>
      </address-setting>
    </address-settings>
    <addresses>
      <address name="DLQ"><anycast><queue name="DLQ"/></anycast></address>
      <address name="ExpiryQueue"><anycast><queue name="ExpiryQueue"/></anycast></address>
    </addresses>
  </core>
</configuration>
XML
  JAVA_ARGS="-XX:+UseG1GC -Xms64m -Xmx512m -XX:MaxMetaspaceSize=128m -Djava.io.tmpdir=$inst/tmp \
-Dlog4j2.disableJmx=true --add-opens java.base/jdk.internal.misc=ALL-UNNAMED" \
    "$inst/bin/artemis" run > "$d/artemis.log" 2>&1 &
  local pid=$!
  echo $pid > "$RUN/artemis.pid"
  # Ready when both acceptors answer; a broker that exits (a bad configuration) fails now.
  local deadline=$((SECONDS + 90))
  until (exec 3<>"/dev/tcp/127.0.0.1/$ARTEMIS_STOMP_PORT") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { tail -30 "$d/artemis.log" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { echo "artemis: port $ARTEMIS_STOMP_PORT not open" >&2; return 1; }
    sleep 0.2
  done
  wait_port 127.0.0.1 "$ARTEMIS_STOMP_SSL_PORT" 30
}

artemis_env() {
  echo "ARTEMIS_HOME=$(artemis_home)"
  echo "ARTEMIS_HOST=127.0.0.1"
  echo "ARTEMIS_PORT=$ARTEMIS_STOMP_PORT"
  echo "ARTEMIS_SSL_PORT=$ARTEMIS_STOMP_SSL_PORT"
  echo "ARTEMIS_SSL_CA_CERTS=$SERVICES/artemis/tls/ca.pem"
  echo "ARTEMIS_USER=$ARTEMIS_HOST_USER"
  echo "ARTEMIS_PASSWORD=$ARTEMIS_HOST_PASSWORD"
  echo "ARTEMIS_WEB_USER=$ARTEMIS_WEB_USER"
  echo "ARTEMIS_WEB_PASSWORD=$ARTEMIS_WEB_PASSWORD"
  echo "ARTEMIS_OUTSIDER_USER=$ARTEMIS_OUTSIDER_USER"
  echo "ARTEMIS_OUTSIDER_PASSWORD=$ARTEMIS_OUTSIDER_PASSWORD"
}
