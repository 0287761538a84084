"""Device side of alert delivery: the wire format, a store-and-forward outbox and the MQTT publisher."""
