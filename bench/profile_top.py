"""Where a target spent its time, from the py-spy samples `python -m bench --profile` took.

    python -m bench.profile_top FOLDER/py-spy.txt [--limit 40] [--filter phonemfa]

py-spy's raw format is one line per distinct stack: `thread;frame;...;frame COUNT`, outermost
frame first. Prints the functions with the most samples on top of the stack (self) and
anywhere in it (inclusive), as shares of all samples taken while the process was busy
(py-spy records only stacks of threads that are running, without --idle).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# A frame reads "function (path/to/file.py:LINE)": the line varies within a function.
_LINE = re.compile(r":\d+\)$")


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [_LINE.sub(")", f) for f in stack.split(";")]
            stacks.append((frames, int(count)))
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--filter", default="", help="only functions whose frame has this")
    args = parser.parse_args()
    stacks = load(args.path)
    total = sum(n for _, n in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        for frame in set(frames[1:]):  # frames[0] is the thread
            inclusive[frame] += n
    print(f"{total} samples")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"\n--- {title}")
        shown = 0
        for frame, n in counter.most_common():
            if args.filter in frame:
                print(f"{n / total * 100:6.1f}%  {frame}")
                shown += 1
                if shown >= args.limit:
                    break


if __name__ == "__main__":
    main()
