"""One check's result, and printing a list of them: marks on a terminal, ok/FAIL elsewhere."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, TextIO

Status = Literal["ok", "warn", "fail"]

_MARKS = {"ok": ("\033[32m✔\033[0m", "ok"), "warn": ("\033[33m!\033[0m", "WARN"), "fail": ("\033[31m✘\033[0m", "FAIL")}


@dataclass(frozen=True)
class Result:
    """``name`` says what was checked; ``hint`` says what to do about a warning or failure."""

    group: str
    name: str
    status: Status
    detail: str = ""
    hint: str = ""


def ok(group: str, name: str, detail: str = "") -> Result:
    return Result(group, name, "ok", detail)


def fail(group: str, name: str, detail: str, hint: str) -> Result:
    return Result(group, name, "fail", detail, hint)


def warn(group: str, name: str, detail: str, hint: str) -> Result:
    return Result(group, name, "warn", detail, hint)


def exit_code(results: list[Result]) -> int:
    return 1 if any(result.status == "fail" for result in results) else 0


def print_text(results: list[Result], out: TextIO, *, color: bool) -> None:
    group = None
    for result in results:
        if result.group != group:
            print(("" if group is None else "\n") + result.group, file=out)
            group = result.group
        mark = _MARKS[result.status][0 if color else 1]
        print(f"  {mark} {result.name}" + (f": {result.detail}" if result.detail else ""), file=out)
        if result.hint:
            print(f"      hint: {result.hint}", file=out)
    failed = sum(result.status == "fail" for result in results)
    print(f"\n{len(results) - failed}/{len(results)} checks passed" + (f", {failed} failed" if failed else ""),
          file=out)


def print_json(results: list[Result], out: TextIO) -> None:
    json.dump({"ok": exit_code(results) == 0, "checks": [asdict(result) for result in results]}, out, indent=2)
    out.write("\n")

