#!/usr/bin/env python3
"""Picks the committed corpus of one fuzz target (fuzz/run.sh calls it).

    cover.py CONTROL_FILE CAP CORPUS_DIR

CONTROL_FILE is a libFuzzer merge control file (`-merge=1
-use_counters=0 -merge_control_file=...`) over CORPUS_DIR and the local
working corpus: it lists each input and the edges it reaches. CORPUS_DIR
keeps its seeds (`seed-*`) and gets, greedily, the inputs that add the most
edges not yet reached, up to CAP files in all; every other file in it is
removed. The whole working corpus reaches more edges than CAP files can
(serde's derived visitors alone have thousands, each error path its own):
the edges the committed corpus reaches, of all, are printed.
"""

import heapq
import os
import shutil
import sys


def read_control(path):
    """The inputs' paths and, by index, the edges each reaches."""
    with open(path) as f:
        lines = f.read().split("\n")
    count = int(lines[0])
    files = lines[2 : 2 + count]
    edges = {}
    for line in lines[2 + count :]:
        words = line.split()
        if words and words[0] == "COV":
            edges[int(words[1])] = set(map(int, words[2:]))
    return files, edges


def main():
    control, cap, corpus = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    files, edges = read_control(control)
    every = set().union(*edges.values()) if edges else set()
    corpus = os.path.normpath(corpus)
    seeds = [
        i
        for i, f in enumerate(files)
        if os.path.dirname(os.path.normpath(f)) == corpus
        and os.path.basename(f).startswith("seed-")
    ]
    kept = set(seeds)
    reached = set().union(*(edges.get(i, set()) for i in seeds))
    # Lazy greedy: a gain only shrinks as edges are reached, so an input
    # whose fresh gain still tops the queue is the best one.
    queue = [(-len(e), i) for i, e in edges.items() if i not in kept]
    heapq.heapify(queue)
    while queue and len(kept) < cap:
        _, i = heapq.heappop(queue)
        gain = len(edges[i] - reached)
        if gain == 0:
            continue
        if queue and gain < -queue[0][0]:
            heapq.heappush(queue, (-gain, i))
            continue
        kept.add(i)
        reached |= edges[i]
    names = {os.path.basename(files[i]) for i in kept}
    for name in os.listdir(corpus):
        if name not in names:
            os.remove(os.path.join(corpus, name))
    for i in kept:
        target = os.path.join(corpus, os.path.basename(files[i]))
        if not os.path.exists(target):
            shutil.copyfile(files[i], target)
    share = 100 * len(reached) / len(every) if every else 100
    print(f"kept {len(kept)} files reaching {len(reached)} of {len(every)} edges ({share:.0f}%)")


if __name__ == "__main__":
    main()
