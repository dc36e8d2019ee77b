"""Top functions by own time from a py-spy raw (collapsed) profile.

    py-spy record -p PID -d 15 -r 200 -f raw -o out.raw --threads --nonblocking
    python bench/own_time.py out.raw [--top 25]

Prints each function's share of all samples where it was the innermost frame (its own time),
and the share per thread. Idle samples (threads waiting in select/epoll/locks) count too: they
are labelled so the reader can tell waiting from working.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        own[leaf] += n
    print(f"{total} samples")
    for name, n in threads.most_common(8):
        print(f"  thread {name}: {100 * n / total:.1f}%")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
