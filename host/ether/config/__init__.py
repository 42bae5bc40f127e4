"""The session file: pydantic models of what it may say (``models``), YAML with the line of every key
(``located``), and loading it against the classes it names (``loading``). Errors are ``file:line: key:
reason``. See docs/configuration.md; the JSON Schema is docs/schemas/config.schema.json.
"""

from ether.config.loading import Config, load
from ether.config.located import ConfigError
from ether.config.models import EtherClassConfig, EtherConfig, EtherInstanceConfig, EtherSessionConfig
from ether.runtime.classes import add_import_paths, import_class

__all__ = [
    "Config",
    "ConfigError",
    "EtherClassConfig",
    "EtherConfig",
    "EtherInstanceConfig",
    "EtherSessionConfig",
    "add_import_paths",
    "import_class",
    "load",
]
