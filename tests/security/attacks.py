"""The tally every attack of the security suite keeps and reports (see conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Attack:
    name: str
    tried: int = 0
    refused: int = 0
    leaked: int = 0
    leaks: list[str] = field(default_factory=list)
    finished: bool = False

    def record(self, *, refused: bool, leaked: bool = False, what: str = "") -> None:
        """One attempt: whether it was refused, and whether anything got through."""
        self.tried += 1
        self.refused += refused
        if leaked:
            self.leaked += 1
            self.leaks.append(what)

    def line(self) -> str:
        return f"ATTACK {self.name}: tried {self.tried} refused {self.refused} leaked {self.leaked}"

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        print(self.line())
        assert self.tried > 0, f"{self.name}: nothing was tried"
        assert self.leaked == 0, f"{self.name}: {self.leaks}"
