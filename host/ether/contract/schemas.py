"""The JSON Schemas of the contract's models, as committed in docs/schemas/.

``python -m ether.contract.schemas`` writes them (run it after changing a model; tests/test_contract.py
fails while the committed files differ from the models). :func:`check` holds a message to them, as any
client reading docs/schemas/ would (it needs the ``jsonschema`` package, a test dependency).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from ether.contract.messages import MODELS, ON_TOPIC, EtherMeta

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


def check(kind: str, payload: Any, folder: Path = FOLDER) -> None:
    """Raise ValueError unless ``payload`` fits a committed schema of its topic kind (and so does its
    ``_ether`` block, if it has one)."""
    import jsonschema

    def problem(model: type, body: Any) -> str | None:
        schema = json.loads((folder / file_name(model)).read_text())
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(body))
        return None if error is None else f"{model.__name__}: {error.message} at {list(error.absolute_path)}"

    problems = [problem(model, payload) for model in ON_TOPIC[kind]]
    if all(problems):
        reasons = "; ".join(p for p in problems if p)
        raise ValueError(f"a {kind} message does not fit the contract: {reasons}: {payload!r}")
    if isinstance(payload, dict) and "_ether" in payload:
        meta_problem = problem(EtherMeta, payload["_ether"])
        if meta_problem:
            raise ValueError(f"a {kind} message's _ether does not fit the contract: {meta_problem}")


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
