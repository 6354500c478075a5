#!/usr/bin/env python3
"""What a server's live heap gained or lost between two massif snapshots,
per allocation site, divided by a count (connections, rooms).

Two `vgdb --pid=P detailed_snapshot FILE` taken of a server running under
`valgrind --tool=massif --vgdb=yes` hold the whole allocation tree; their
difference per site is what, say, 300 idle connections or 150 rooms
hibernating cost (BENCHMARKS.md, seventeenth session).

    tests/benches/heapdiff.py BEFORE AFTER COUNT [MIN_BYTES_PER_COUNT]

A site is named by its first three frames that are not allocator plumbing
(`alloc`, `Box::new`, `Vec` growth, hash-table resizes and the like).
"""

import re
import sys

NODE = re.compile(r"^( *)n(\d+): (\d+) (.*)$")
PLUMBING = re.compile(
    r"alloc|allocate|box_new|^new|UnknownInlined|with_capacity|finish_grow|grow"
    r"|reserve|malloc|__rdl|do_alloc|fallible|prepare_resize|resize_inner|^from"
    r"|^clone|to_vec|to_owned|^collect|^pin<|realloc|spec_|RawVec|RawTable"
    r"|hashbrown|^push|into_boxed|^Box|^new_",
    re.I,
)


def tree(path):
    """The last detailed heap tree in a massif file, as nested dicts."""
    lines = open(path).read().split("\n")
    starts = [i for i, l in enumerate(lines) if l.startswith("heap_tree=")]
    if not starts or lines[starts[-1]] == "heap_tree=empty":
        sys.exit(f"{path}: no detailed snapshot (use vgdb's detailed_snapshot)")
    root = {"name": "", "bytes": 0, "kids": {}}
    stack = [(-1, root)]
    for line in lines[starts[-1] + 1 :]:
        m = NODE.match(line)
        if not m:
            if line.startswith("#"):
                break
            continue
        indent, size, rest = len(m.group(1)), int(m.group(3)), m.group(4)
        name = re.sub(r"^0x[0-9A-F]+: ", "", rest)
        name = re.sub(r" \(.*\)$", "", name)
        name = re.sub(r"::h[0-9a-f]{16}", "", name)
        while stack[-1][0] >= indent:
            stack.pop()
        kids = stack[-1][1]["kids"]
        node = kids.setdefault(name, {"name": name, "bytes": 0, "kids": {}})
        node["bytes"] += size
        stack.append((indent, node))
    return root


def sites(node, path, out):
    """Bytes per site: a path is cut at its third non-plumbing frame."""
    named = [p for p in path if not PLUMBING.search(p)]
    if not node["kids"] or len(named) >= 3:
        key = " <- ".join(named[:3]) or " <- ".join(path)
        out[key] = out.get(key, 0) + node["bytes"]
        return
    below = 0
    for kid in node["kids"].values():
        below += kid["bytes"]
        sites(kid, path + [kid["name"]], out)
    if node["bytes"] > below:
        key = " <- ".join(path) + " (self)"
        out[key] = out.get(key, 0) + node["bytes"] - below


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    before, after = {}, {}
    sites(tree(sys.argv[1]), [], before)
    sites(tree(sys.argv[2]), [], after)
    count = float(sys.argv[3])
    floor = float(sys.argv[4]) if len(sys.argv) > 4 else 40
    rows = sorted(
        ((after.get(k, 0) - before.get(k, 0)) / count, k) for k in set(before) | set(after)
    )
    for per, key in rows:
        if abs(per) >= floor:
            print(f"{per:+9.0f}  {key[:230]}")
    total = sum(after.values()) - sum(before.values())
    print(f"{total / count:+9.0f}  in all, per count of {count:g}")


if __name__ == "__main__":
    main()
