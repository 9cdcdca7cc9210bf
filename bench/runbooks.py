"""Generated runbooks for the two benchmark shapes, written as YAML so they go through the real loader.

Shape A, "chain of 10-wide chords": blocks of a 10-item for_each (no concurrency cap) followed by a
join step, repeated. Shape B, "one wide fan-out with a join": one step, a for_each over N-2 items, a join.
Every step is ``core.echo``, which renders a template and logs one line, as real steps do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHORD_WIDTH = 10
SHAPES = {
    "A": "chain of 10-wide chords",
    "B": "one wide fan-out + join",
}


@dataclass(frozen=True)
class Generated:
    shape: str
    path: Path
    steps: int


def chain_of_chords(blocks: int) -> str:
    items = "[" + ", ".join(str(i) for i in range(CHORD_WIDTH)) + "]"
    lines = [f"name: bench-chords-{blocks}", "steps:"]
    for b in range(blocks):
        lines += [
            f"  - id: b{b}",
            f"    for_each: {items}",
            "    action: core.echo",
            "    with: {message: \"item {{ item }}\"}",
            f"  - id: j{b}",
            "    action: core.echo",
            f"    with: {{message: \"joined block {b}\"}}",
        ]
    return "\n".join(lines) + "\n"


def fan_out(width: int) -> str:
    items = "[" + ", ".join(str(i) for i in range(width)) + "]"
    return "\n".join([
        f"name: bench-fan-{width}",
        "steps:",
        "  - id: start",
        "    action: core.echo",
        "    with: {message: start}",
        "  - id: fan",
        f"    for_each: {items}",
        "    action: core.echo",
        "    with: {message: \"item {{ item }}\"}",
        "  - id: join",
        "    action: core.echo",
        "    with: {message: joined}",
    ]) + "\n"


def generate(shape: str, size: int, directory: Path) -> Generated:
    """Write the runbook of ``shape`` closest to ``size`` steps; returns its path and exact step count."""
    if shape == "A":
        blocks = max(1, round(size / (CHORD_WIDTH + 1)))
        text, steps = chain_of_chords(blocks), blocks * (CHORD_WIDTH + 1)
    elif shape == "B":
        width = max(1, size - 2)
        text, steps = fan_out(width), width + 2
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    path = directory / f"shape-{shape}-{steps}.yaml"
    path.write_text(text)
    return Generated(shape, path, steps)
