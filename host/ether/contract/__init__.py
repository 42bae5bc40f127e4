"""The contract with every MQTT client: the message format (``wire``) and the topic layout (``topics``).

Everything Ether sends or accepts is defined here; the rest of the package produces or consumes it.
"""
