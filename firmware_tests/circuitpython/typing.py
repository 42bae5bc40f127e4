"""The names adafruit_connection_manager imports from typing (unused)."""

List = Optional = Tuple = Type = Union = object
