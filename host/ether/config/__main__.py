"""``python -m ether.config > docs/schemas/config.schema.json``: the JSON Schema of a session file."""

import json

from ether.config.models import json_schema

print(json.dumps(json_schema(), indent=2))
