"""The type names adafruit_connection_manager imports (unused)."""

CircuitPythonSocketType = InterfaceType = SocketpoolModuleType = object
SocketType = SSLContextType = object
