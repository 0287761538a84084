"""`heartsight demo` (sdk.demo.run) and the brokers it embeds: a Mosquitto of its own on a free port (broker) or
an in-process MQTT 5 broker (python_broker). They are the demo's and the tests', not the product path's: devices
and clinicians reach a real broker through sdk.stream."""
