"""``python -m bench COMMAND``: asynctg's benchmarks. Each prints a table and writes JSON."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    commands = {
        "budget": "bench.budget",
        "overhead": "bench.overhead",
        "step": "bench.step",
    }
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench {" + ",".join([*commands, "all"]) + "} [options]")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "all":
        quick = "--quick" in rest
        runs = {
            "step": ["--batch-sizes", "32"],
            "budget": [],
            "overhead": ["--calls", "1000", "--rounds", "2"] if quick else [],
        }
        for cmd, args in runs.items():
            __import__(commands[cmd], fromlist=["main"]).main(args)
            print()
        return 0
    if name not in commands:
        choices = ", ".join([*commands, "all"])
        print(f"unknown benchmark {name!r}; choose from {choices}", file=sys.stderr)
        return 2
    __import__(commands[name], fromlist=["main"]).main(rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
