"""The contract with every MQTT client: the envelope (``wire``), the topic layout built and parsed
(``topics``), the typed model of every message (``messages``) and their JSON Schemas (``schemas``).
Everything Ether sends or accepts is defined here; the rest of the package produces or consumes it."""
