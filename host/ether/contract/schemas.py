"""The JSON Schemas of the contract's models, as committed in docs/schemas/.

``python -m ether.contract.schemas`` writes them (run it after changing a model; tests/test_contract.py
fails while the committed files differ from the models).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ether.contract.messages import MODELS

FOLDER = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def file_name(model: type) -> str:
    """``InstanceStatus`` -> ``instance-status.json``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", model.__name__).lower() + ".json"


def schemas() -> dict[str, str]:
    """Each model's file name and its schema, as the text to commit."""
    return {
        file_name(model): json.dumps(model.model_json_schema(by_alias=True), indent=2) + "\n"
        for model in MODELS
    }


def write(folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schemas().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER):
        print(path)
