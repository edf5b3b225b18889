#!/usr/bin/env python3
"""Writes a kps backup file (src/backup.rs format) holding COUNT `user` key pairs of one user, for
`kps backup import`: bench/store.sh seeds its 1,000 and 1,000,000 key pair stores with it.

Usage: gen_backup.py OUT COUNT [USER] [PROJECT]   (defaults: u-big, p-bench)

Key pairs are named k0000000, k0000001, ... (7 digits, so name order = number order), ids 1..COUNT,
every one with the same valid Ed25519 public key (list does not need distinct keys), and each has its
name-index line, as kps writes them. Prints the number of lines and bytes written.
"""

import json
import sys
import time

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 bench"
FINGERPRINT = "f1:02:17:de:ef:c1:30:83:11:8b:82:a0:0e:67:7f:d5"


def name(i):
    return "k%07d" % i


def main():
    out, count = sys.argv[1], int(sys.argv[2])
    user = sys.argv[3] if len(sys.argv) > 3 else "u-big"
    project = sys.argv[4] if len(sys.argv) > 4 else "p-bench"
    if count > 10_000_000:
        sys.exit("gen_backup.py: at most 10,000,000 key pairs (7-digit names)")
    created = int(time.time()) * 1_000_000
    header = {"format_version": 1, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "next_id": count + 1}
    # The constant parts of every line, serialized once; only id, name and timestamp change per line.
    q = json.dumps
    kp_head = '{"type":"keypair","record":{"id":'
    kp_mid = (',"key_type":"ssh","public_key":%s,"fingerprint":%s,"algorithm":"ED25519","user_id":%s,'
              '"project_id":%s,"scope":"user","description":"","created_at_us":'
              % (q(PUBLIC_KEY), q(FINGERPRINT), q(user), q(project)))
    ni_head = '{"type":"name_index","project_id":%s,"name":"' % q(project)
    ni_tail = '","entry":{"users":[%s]}}\n' % q(user)
    lines = 1
    size = 0
    with open(out, "w") as f:
        text = json.dumps(header) + "\n"
        f.write(text)
        size += len(text)
        step = 10_000
        for start in range(0, count, step):
            chunk = []
            for i in range(start, min(count, start + step)):
                n = name(i)
                chunk.append('%s%d,"name":"%s"%s%d,"updated_at_us":null}}\n' % (kp_head, i + 1, n, kp_mid, created + i))
            for i in range(start, min(count, start + step)):
                chunk.append(ni_head + name(i) + ni_tail)
            text = "".join(chunk)
            f.write(text)
            size += len(text)
            lines += len(chunk)
    print(json.dumps({"file": out, "keypairs": count, "lines": lines, "bytes": size}))


if __name__ == "__main__":
    main()
