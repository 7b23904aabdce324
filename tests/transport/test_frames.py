"""The STOMP 1.2 frames the host writes itself (a batch of events or acknowledgements in
one write), checked against stomp.py's own parser."""

from __future__ import annotations

from opsagent.transport.stomp import broker_kind, encode_frame, subscribe_headers, user_header_of
from stomp.utils import parse_frame


def test_frames_parse_back_with_escaped_headers_and_exact_body() -> None:
    body = '{"msg":"a:b\\nc","é":1}'.encode()
    raw = encode_frame(
        "SEND", {"destination": "/topic/x:y\\z\r\n", "content-type": "application/json"}, body
    )
    assert raw.endswith(b"\0") and raw.count(b"\0") == 1
    frame = parse_frame(raw[:-1])
    assert frame.cmd == "SEND"
    assert frame.headers["destination"] == "/topic/x:y\\z\r\n"
    assert frame.headers["content-length"] == str(len(body))
    assert frame.body == body


def test_an_ack_has_no_body_and_keeps_its_id() -> None:
    raw = encode_frame("ACK", {"id": "ID:host-1234-5:1:1:1:7"})
    frame = parse_frame(raw[:-1])
    assert (frame.cmd, frame.headers, frame.body) == ("ACK", {"id": "ID:host-1234-5:1:1:1:7"}, b"")


def test_the_broker_and_its_user_header_come_from_the_server_header() -> None:
    # The CONNECTED frames' ``server`` of the two test brokers, as they send it.
    assert broker_kind("ActiveMQ/5.17.2") == "classic"
    assert broker_kind("ActiveMQ-Artemis/2.40.0 ActiveMQ Artemis Messaging Engine") == "artemis"
    assert broker_kind("RabbitMQ/3.12") is None
    # Artemis's validated user reaches STOMP clients as JMSXUserID, like Classic's.
    assert user_header_of("ActiveMQ-Artemis/2.40.0 ActiveMQ Artemis Messaging Engine") == (
        "JMSXUserID")
    assert user_header_of("RabbitMQ/3.12") is None
    # Artemis reads activemq.prefetchSize as bytes: it gets a window in bytes instead.
    assert subscribe_headers("artemis", 2000, True) == {"consumer-window-size": "1024000"}
    assert subscribe_headers("classic", 2000, True) == {
        "activemq.prefetchSize": "2000", "activemq.exclusive": "true"}
