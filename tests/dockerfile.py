"""Reading deploy/Dockerfile's instructions, for the tests that check the image's steps without
a container runtime."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def image_of(self, stage: Stage) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], stage.image)


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    # Continuation lines joined, comments and blank lines dropped.
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages)


def copied_sources(stage: Stage) -> list[str]:
    """The paths of the checkout a stage copies in (COPY from the build context)."""
    sources: list[str] = []
    for rest in stage.arguments("COPY"):
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        if rest.startswith("--from"):
            continue
        sources.extend(words[:-1])
    return sources
