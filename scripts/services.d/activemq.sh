# ActiveMQ Classic 5.17 (Debian package), STOMP only, loopback only, one PID.
# ACTIVEMQ_PERSISTENT=true keeps messages across broker restarts (KahaDB).
# Authentication is on, as in production: three users (the host, a web tier, an outsider
# who may connect but is allowed no capability), and the broker stamps each message with
# the user that sent it (JMSXUserID), overwriting whatever the client put there.  The
# passwords are fixed: this broker listens on loopback only and holds test data.
ACTIVEMQ_HOST_USER=opsagent ACTIVEMQ_HOST_PASSWORD=opsagent-host-pw
ACTIVEMQ_WEB_USER=webtier ACTIVEMQ_WEB_PASSWORD=opsagent-web-pw
ACTIVEMQ_OUTSIDER_USER=outsider ACTIVEMQ_OUTSIDER_PASSWORD=opsagent-outsider-pw
ACTIVEMQ_STOMP_PORT=${ACTIVEMQ_STOMP_PORT:-61613}
ACTIVEMQ_STOMP_SSL_PORT=${ACTIVEMQ_STOMP_SSL_PORT:-$((ACTIVEMQ_STOMP_PORT + 1))}

activemq_install() { apt_once activemq default-jre-headless; }

activemq_ports() { echo "$ACTIVEMQ_STOMP_PORT $ACTIVEMQ_STOMP_SSL_PORT"; }

activemq_start() {
  local d=$SERVICES/activemq
  rm -rf "$d/conf" "$d/tmp"; mkdir -p "$d/conf" "$d/data" "$d/tmp" "$d/tls"
  [ "${ACTIVEMQ_PERSISTENT:-false}" = true ] || rm -rf "$d/data"/*
  # A self-signed key for the STOMP+TLS connector; its certificate is the clients' CA bundle.
  if [ ! -f "$d/tls/broker.ks" ]; then
    keytool -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
      -dname "CN=localhost" -ext "SAN=ip:127.0.0.1,dns:localhost" -ext "BC=ca:true" \
      -keystore "$d/tls/broker.ks" -storepass opsagent-test -keypass opsagent-test >/dev/null 2>&1
    keytool -exportcert -rfc -alias broker -keystore "$d/tls/broker.ks" \
      -storepass opsagent-test -file "$d/tls/ca.pem" >/dev/null 2>&1
  fi
  cat > "$d/conf/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="test" useJmx="false"
          persistent="${ACTIVEMQ_PERSISTENT:-false}" schedulerSupport="false" dataDirectory="\${activemq.data}"
          populateJMSXUserID="true" useAuthenticatedPrincipalForJMSXUserID="true">
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users>
          <authenticationUser username="$ACTIVEMQ_HOST_USER" password="$ACTIVEMQ_HOST_PASSWORD" groups="hosts,users"/>
          <authenticationUser username="$ACTIVEMQ_WEB_USER" password="$ACTIVEMQ_WEB_PASSWORD" groups="users"/>
          <authenticationUser username="$ACTIVEMQ_OUTSIDER_USER" password="$ACTIVEMQ_OUTSIDER_PASSWORD" groups="users"/>
        </users>
      </simpleAuthenticationPlugin>
    </plugins>
    <sslContext>
      <sslContext keyStore="file:$d/tls/broker.ks" keyStorePassword="opsagent-test"/>
    </sslContext>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:${ACTIVEMQ_STOMP_PORT}?transport.tcpNoDelay=true&amp;transport.socketBufferSize=4194304"/>
      <transportConnector name="stomp+ssl" uri="stomp+ssl://127.0.0.1:${ACTIVEMQ_STOMP_SSL_PORT}?transport.tcpNoDelay=true&amp;transport.socketBufferSize=4194304"/>
    </transportConnectors>
  </broker>
</beans>
XML
  cp /usr/share/activemq/conf/log4j2.properties "$d/conf/" 2>/dev/null || true
  java -Xms64m -Xmx256m -Djava.awt.headless=true \
    --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED \
    --add-opens java.base/java.util.concurrent=ALL-UNNAMED --add-opens java.base/java.net=ALL-UNNAMED \
    -Dactivemq.classpath="$d/conf" -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$d" \
    -Dactivemq.conf="$d/conf" -Dactivemq.data="$d/data" -Djava.io.tmpdir="$d/tmp" \
    -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$d/conf/activemq.xml" \
    > "$d/activemq.log" 2>&1 &
  echo $! > "$RUN/activemq.pid"
  wait_port 127.0.0.1 "$ACTIVEMQ_STOMP_PORT" 60
  wait_port 127.0.0.1 "$ACTIVEMQ_STOMP_SSL_PORT" 30
}

activemq_env() {
  echo "ACTIVEMQ_HOST=127.0.0.1"
  echo "ACTIVEMQ_PORT=$ACTIVEMQ_STOMP_PORT"
  echo "ACTIVEMQ_SSL_PORT=$ACTIVEMQ_STOMP_SSL_PORT"
  echo "ACTIVEMQ_SSL_CA_CERTS=$SERVICES/activemq/tls/ca.pem"
  echo "ACTIVEMQ_USER=$ACTIVEMQ_HOST_USER"
  echo "ACTIVEMQ_PASSWORD=$ACTIVEMQ_HOST_PASSWORD"
  echo "ACTIVEMQ_WEB_USER=$ACTIVEMQ_WEB_USER"
  echo "ACTIVEMQ_WEB_PASSWORD=$ACTIVEMQ_WEB_PASSWORD"
  echo "ACTIVEMQ_OUTSIDER_USER=$ACTIVEMQ_OUTSIDER_USER"
  echo "ACTIVEMQ_OUTSIDER_PASSWORD=$ACTIVEMQ_OUTSIDER_PASSWORD"
}
