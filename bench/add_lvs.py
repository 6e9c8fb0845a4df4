#!/usr/bin/env python3
"""Adds N one-extent linear LVs, tagged as carve's, to a VG metadata backup.

bench/guest.sh uses it to give carve a VG with 1,000 LVs in one vgcfgrestore
instead of 1,000 lvcreate runs (minutes under user-mode-linux).
  add_lvs.py BACKUP_IN BACKUP_OUT COUNT CLASS
"""
import random
import string
import sys


def uuid():
    chars = string.ascii_letters + string.digits
    groups = [6, 4, 4, 4, 4, 4, 6]
    return "-".join("".join(random.choice(chars) for _ in range(n)) for n in groups)


def main():
    src, dst, count, klass = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    text = open(src).read()
    start = text.index("physical_volumes {")
    depth, i = 0, start
    while True:
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                break
        i += 1
    lvs = []
    for n in range(count):
        lvs.append(
            f"""
cv-bench-{n:04d}-0000000000000000 {{
id = "{uuid()}"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
tags = ["carve.dev/owner=carve.dev", "carve.dev/class={klass}", "carve.dev/name=bench-{n}"]
creation_time = 1795000000
creation_host = "bench"
segment_count = 1
segment1 {{
start_extent = 0
extent_count = 1
type = "striped"
stripe_count = 1
stripes = [
"pv0", {n}
]
}}
}}
"""
        )
    block = "\nlogical_volumes {\n" + "".join(lvs) + "}\n"
    open(dst, "w").write(text[: i + 1] + block + text[i + 1 :])


main()
