from pathlib import Path

import inventory

EXAMPLE = Path(inventory.__file__).resolve().parent / "example.yaml"
