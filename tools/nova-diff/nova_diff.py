#!/usr/bin/env python3
"""Differential test: real OpenStack Nova os-keypairs vs kps.

Sends the same sequence of requests to both servers and compares status, the relevant headers and the JSON
bodies after masking (request ids, `id`, `created_at`, generated key material).  Python 3.11, stdlib only.

    python3 tools/nova-diff/nova_diff.py --nova http://127.0.0.1:18774 --kps http://127.0.0.1:18775

See README.md next to this file.
"""
import argparse
import base64
import datetime
import http.client
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.parse

# --------------------------------------------------------------------------------------------------------------
# Identities.  Key pairs belong to users, so fresh user ids per run give fresh state on Nova (whose database
# persists between runs); kps should also be started on an empty data dir.  Nova routes only hex project ids.
RUN = secrets.token_hex(4)
P = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"       # the project of every token
P2 = "f9e8d7c6b5a4938271605f4e3d2c1b0a"      # another (hex) project, for the mismatch case


def uid(tag):
    return f"u{RUN}{tag}"


U_GEN, U_IMP, U_ERR, U_LIST, U_QUOTA, U_ADM, U_OTHER, U_LEG, U_DEL = (
    uid(t) for t in ("gen", "imp", "err", "list", "quota", "adm", "other", "leg", "del"))


def tok(user, project=P, roles=None):
    return f"{user}:{project}" + (f":{roles}" if roles else "")


# --------------------------------------------------------------------------------------------------------------
# Test key material

def ssh_string(b):
    return struct.pack(">I", len(b)) + b


def make_keys():
    """Generate test keys with ssh-keygen/openssl (fallbacks embedded where possible)."""
    d = tempfile.mkdtemp(prefix="nova-diff-")
    keys = {}
    try:
        for name, args in (("rsa", ["-t", "rsa", "-b", "2048"]), ("p256", ["-t", "ecdsa", "-b", "256"]),
                           ("p384", ["-t", "ecdsa", "-b", "384"]), ("p521", ["-t", "ecdsa", "-b", "521"]),
                           ("ed25519", ["-t", "ed25519"]), ("dsa", ["-t", "dsa"])):
            f = os.path.join(d, name)
            try:
                subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", f"test-{name}", "-f", f] + args,
                               check=True, capture_output=True)
                with open(f + ".pub") as fh:
                    keys[name] = fh.read().strip()
            except (OSError, subprocess.CalledProcessError):
                keys[name] = None
        cert = os.path.join(d, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        os.path.join(d, "cert.key"), "-out", cert, "-days", "30", "-subj", "/CN=nova-diff"],
                       check=True, capture_output=True)
        with open(cert) as fh:
            keys["cert"] = fh.read()
        pub = os.path.join(d, "pub.pem")
        subprocess.run(["openssl", "pkey", "-in", os.path.join(d, "cert.key"), "-pubout", "-out", pub],
                       check=True, capture_output=True)
        with open(pub) as fh:
            keys["pem_pub"] = fh.read()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    # spec test vector (Ed25519 key from seed 00..1f)
    keys["vector"] = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 ops")
    if keys.get("dsa") is None:   # OpenSSH >= 9.8 cannot generate DSA keys any more
        keys["dsa"] = (
            "ssh-dss AAAAB3NzaC1kc3MAAACBAO/zCsrJtZ2M17rBSWQ0lE7WJILNuZkGJboFkoX8TYRg+axKTtdY6/RsQ1lDyCihmK9K5Jst"
            "hrP8thM3neNgKGJlDEqiQLHsYnPd/lWwGdPCyomGUq1jfaGns3li1rKPSxpbWBqKOARoNSZa9HIguaH5Qjis5TKJsjbKms3+C3"
            "BjAAAAFQCX2Pr234eSBwVyOOHTcRAiohOOZQAAAIBYJ8aanrcOHQycQlqAhOEdjNimEV8yYKp11UL6jFjv8CeqM6vbZjJM3rE4"
            "lnItsRtlO9A7o3gKocGXfh/vfTQV+Q4b5Cb5pFoCQ29o7ymSZShqWuts32H7EEHJ+smrQ2q9oK2bExj7SV5sm32Nz0Q51wiEzU"
            "DMzVANtgepmQ5BrQAAAIBevecKkqUrRQQn8rOBtl6Q3vr1Q6QOT7D5SqVoLL0F+/uoPSO8KT5AxpggdLFIcW34Photfp6mmLA8"
            "r/rGA+YjhuqdI4ZrufBu5IfaFF2JEj4ZkV8bN+nYAi2ni2s+vgm8XyqcxvAI6Wn+fS1sR2XTRLHPvKiH4kfob9m6GtKmAg== x")
    for k in ("rsa", "p256", "p384", "p521", "ed25519"):
        if keys.get(k) is None:
            sys.exit(f"ssh-keygen could not generate a {k} key")
    ed_blob = base64.b64decode(keys["vector"].split(" ")[1])
    ed_pk = ed_blob[-32:]
    # security-key Ed25519: string algo, string pk, string application -- structurally valid
    sk = ssh_string(b"sk-ssh-ed25519@openssh.com") + ssh_string(ed_pk) + ssh_string(b"ssh:")
    keys["sk"] = "sk-ssh-ed25519@openssh.com " + base64.b64encode(sk).decode() + " sk"
    # ed25519 blob announced as ssh-rsa
    keys["mismatch"] = "ssh-rsa " + keys["vector"].split(" ")[1] + " x"
    # truncated: drop the last 8 bytes of the RSA blob, re-encode (valid base64, invalid key)
    rsa_blob = base64.b64decode(keys["rsa"].split(" ")[1])
    keys["truncated"] = "ssh-rsa " + base64.b64encode(rsa_blob[:-8]).decode() + " t"
    return keys


# --------------------------------------------------------------------------------------------------------------
# HTTP

class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # list of (lower-name, value)
        self.body = body                # bytes

    def get(self, name):
        vals = [v for k, v in self.headers if k == name.lower()]
        return vals

    def first(self, name):
        v = self.get(name)
        return v[0] if v else None


def send(base, method, path, headers, body):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        elif method in ("POST", "PUT"):
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        if body:
            conn.send(body)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, [(k.lower(), v) for k, v in r.getheaders()], data)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------------------
# Cases

class Case:
    def __init__(self, name, method, path, token=None, ver=None, headers=(), body=None, raw=None,
                 ctype="application/json", gen=False, tags=()):
        self.name, self.method, self.path, self.token = name, method, path, token
        self.headers = list(headers)
        if ver is not None:
            self.headers.append(("OpenStack-API-Version", f"compute {ver}"))
        if token is not None:
            self.headers.append(("X-Auth-Token", token))
        self.headers.append(("Accept", "application/json"))
        if raw is not None:
            self.body = raw if isinstance(raw, bytes) else raw.encode()
        elif body is not None:
            self.body = json.dumps(body).encode()
        else:
            self.body = None
        if self.body is not None and ctype is not None:
            self.headers.append(("Content-Type", ctype))
        self.gen = gen
        self.tags = set(tags)

    def describe(self):
        hs = [f"{k}: {v}" for k, v in self.headers if k not in ("Accept",)]
        s = f"{self.method} {self.path}  [{'; '.join(hs)}]"
        if self.body is not None:
            b = self.body.decode("utf-8", "replace")
            s += "  body=" + (b if len(b) <= 300 else b[:300] + "...")
        return s


def build_cases(K):
    C = []

    def add(*a, **kw):
        C.append(Case(*a, **kw))

    V = f"/v2.1/{P}/os-keypairs"
    VL = "/v2.1/os-keypairs"             # project-less
    LEG = f"/v2/{P}/os-keypairs"

    # ---- version documents (no auth)
    for p in ("/", "/v2", "/v2/", "/v2.1", "/v2.1/"):
        add(f"version doc {p}", "GET", p, tags={"maxver"})
    add("version doc /v2.1/ at 2.35", "GET", "/v2.1/", ver="2.35", tags={"maxver"})
    add("version doc /v2.1/ latest", "GET", "/v2.1/", ver="latest", tags={"maxver"})

    # ---- authentication
    add("list no token", "GET", V, tags={"auth401"})
    add("list bad token", "GET", V, token="justoneword", tags={"auth401"})
    add("list bad token 4 fields", "GET", V, token="a:b:c:d", tags={"auth401"})

    # ---- generate at various versions
    g = tok(U_GEN)
    add("generate 2.1", "POST", V, g, None, body={"keypair": {"name": "gen-21"}}, gen=True)
    add("generate 2.2", "POST", V, g, "2.2", body={"keypair": {"name": "gen-22"}}, gen=True)
    add("generate 2.2 type ssh", "POST", V, g, "2.2", body={"keypair": {"name": "gen-22s", "type": "ssh"}}, gen=True)
    add("generate 2.10", "POST", V, g, "2.10", body={"keypair": {"name": "gen-210"}}, gen=True)
    add("generate 2.10 own user_id", "POST", V, g, "2.10",
        body={"keypair": {"name": "gen-210u", "user_id": U_GEN}}, gen=True)
    add("generate 2.10 empty user_id", "POST", V, g, "2.10",
        body={"keypair": {"name": "gen-210e", "user_id": ""}}, gen=True)
    add("generate 2.35", "POST", V, g, "2.35", body={"keypair": {"name": "gen-235"}}, gen=True)
    add("generate 2.91", "POST", V, g, "2.91", body={"keypair": {"name": "gen-291"}}, gen=True)
    add("generate 2.92 (no public_key)", "POST", V, g, "2.92", body={"keypair": {"name": "gen-292"}})
    add("generate x509 2.2", "POST", V, g, "2.2", body={"keypair": {"name": "gen-x509", "type": "x509"}}, gen=True)
    add("generate x509 2.91", "POST", V, g, "2.91", body={"keypair": {"name": "gen-x509b", "type": "x509"}},
        gen=True)
    add("generate project-less 2.2", "POST", VL, g, "2.2", body={"keypair": {"name": "gen-nop"}}, gen=True)
    add("show generated 2.2", "GET", V + "/gen-22", g, "2.2", gen=True)
    add("list generated 2.2", "GET", V, g, "2.2", gen=True)
    add("type at 2.1", "POST", V, g, None, body={"keypair": {"name": "t21", "type": "ssh"}})
    add("bad type 2.2", "POST", V, g, "2.2", body={"keypair": {"name": "t22", "type": "rsa"}})
    add("user_id at 2.9", "POST", V, g, "2.9", body={"keypair": {"name": "u29", "user_id": U_GEN}})
    add("user_id not string 2.10", "POST", V, g, "2.10", body={"keypair": {"name": "u210", "user_id": 5}})

    # ---- kps extensions (README bullet 6)
    add("ext algorithm 2.2", "POST", V, g, "2.2", body={"keypair": {"name": "ext-alg", "algorithm": "ED25519"}},
        gen=True, tags={"ext"})
    add("ext key_protection 2.2", "POST", V, g, "2.2",
        body={"keypair": {"name": "ext-kp", "public_key": K["ed25519"],
                          "key_protection": {"encryption": {"type": "default"}}}}, tags={"ext"})

    # ---- import
    i = tok(U_IMP)
    for k in ("rsa", "p256", "p384", "p521", "ed25519"):
        add(f"import {k} 2.1", "POST", V, i, None, body={"keypair": {"name": f"imp-{k}", "public_key": K[k]}})
        add(f"import {k} 2.2", "POST", V, i, "2.2", body={"keypair": {"name": f"imp2-{k}", "public_key": K[k]}})
    add("import spec vector 2.92", "POST", V, i, "2.92",
        body={"keypair": {"name": "ops@laptop.1", "public_key": K["vector"]}})
    add("import trailing newline", "POST", V, i, "2.2",
        body={"keypair": {"name": "imp-nl", "public_key": K["ed25519"] + "\n"}})
    add("import trailing crlf", "POST", V, i, "2.2",
        body={"keypair": {"name": "imp-crlf", "public_key": K["ed25519"] + "\r\n"}})
    add("show trailing newline", "GET", V + "/imp-nl", i, "2.2")
    add("import comment with spaces", "POST", V, i, "2.2",
        body={"keypair": {"name": "imp-cmt", "public_key": K["rsa"] + " more words here"}})
    add("import no comment", "POST", V, i, "2.2",
        body={"keypair": {"name": "imp-nocmt", "public_key": " ".join(K["p256"].split(" ")[:2])}})
    add("import type ssh explicit 2.2", "POST", V, i, "2.2",
        body={"keypair": {"name": "imp-ssh", "type": "ssh", "public_key": K["p384"]}})
    add("import x509 cert 2.2", "POST", V, i, "2.2",
        body={"keypair": {"name": "imp-x509", "type": "x509", "public_key": K["cert"]}})
    add("show x509 2.2", "GET", V + "/imp-x509", i, "2.2")
    add("import x509 cert at 2.92", "POST", V, i, "2.92",
        body={"keypair": {"name": "imp-x509-92", "type": "x509", "public_key": K["cert"]}})
    add("import same pubkey twice (new name)", "POST", V, i, "2.2",
        body={"keypair": {"name": "imp-dup-pub", "public_key": K["rsa"]}})
    add("show imported 2.1", "GET", V + "/imp-rsa", i, None)
    add("show imported 2.2", "GET", V + "/imp-rsa", i, "2.2")
    add("show imported 2.10", "GET", V + "/imp-rsa", i, "2.10")
    add("show project-less 2.2", "GET", VL + "/imp-rsa", i, "2.2")
    add("list import user 2.1", "GET", V, i, None)
    add("list import user 2.2", "GET", V, i, "2.2")

    # ---- invalid keys
    e = tok(U_ERR)
    lt = tok(U_LIST)
    ed_fields = K["ed25519"].split(" ")
    bad = {
        "garbage": "this is not a key",
        "PEM public key": K["pem_pub"],
        "tab": ed_fields[0] + "\t" + ed_fields[1],
        "double space": ed_fields[0] + "  " + ed_fields[1] + " c",
        "bad base64": ed_fields[0] + " AAAA!!!!bad== c",
        "ssh-dss": K["dsa"],
        "sk-ssh-ed25519 valid blob": K["sk"],
        "truncated rsa": K["truncated"],
        "algo mismatch": K["mismatch"],
        "bare blob": ed_fields[1],
        "empty string": "",
        "newline in middle": ed_fields[0] + " " + ed_fields[1] + "\nssh-ed25519 " + ed_fields[1],
        "leading space": " " + K["ed25519"],
    }
    for n, (label, pk) in enumerate(bad.items()):
        # unique names: Nova accepts some of these, which must not turn the next ones into 409s
        add(f"invalid key: {label}", "POST", V, e, "2.2", body={"keypair": {"name": f"bad-key-{n}", "public_key": pk}},
            tags={"double space": {"dblspace"}, "ssh-dss": {"naccept"},
                  "sk-ssh-ed25519 valid blob": {"naccept"}}.get(label, ()))
    add("invalid key: ssh-dss 2.1", "POST", V, e, None, body={"keypair": {"name": "bad-dss", "public_key": K["dsa"]}},
        tags={"naccept"})
    add("invalid key: sk-ssh-ed25519 2.92", "POST", V, e, "2.92",
        body={"keypair": {"name": "bad-sk", "public_key": K["sk"]}}, tags={"naccept"})
    add("invalid x509: garbage", "POST", V, e, "2.2",
        body={"keypair": {"name": "bad-x509", "type": "x509", "public_key": "not a cert"}}, tags={"x509bad"})
    add("invalid x509: broken PEM", "POST", V, e, "2.2",
        body={"keypair": {"name": "bad-x509", "type": "x509",
                          "public_key": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}, tags={"x509bad"})
    add("invalid x509: ssh key as x509", "POST", V, e, "2.2",
        body={"keypair": {"name": "bad-x509", "type": "x509", "public_key": K["ed25519"]}}, tags={"x509bad"})
    add("public_key not string", "POST", V, e, "2.2", body={"keypair": {"name": "pk-int", "public_key": 42}})
    add("public_key null 2.2", "POST", V, e, "2.2", body={"keypair": {"name": "pk-null", "public_key": None}})
    add("public_key null 2.92", "POST", V, e, "2.92", body={"keypair": {"name": "pk-null", "public_key": None}})

    # ---- name rules
    okpk = K["ed25519"]
    names = [
        ("empty", ""), ("256 chars", "a" * 256), ("leading space", " lead"), ("trailing space", "trail "),
        ("tab inside", "a\tb"), ("slash", "a/b"), ("at sign", "a@b"), ("dot", "a.b"), ("unicode", "ключ"),
        ("only spaces", "   "),
    ]
    for ver in ("2.1", "2.91", "2.92"):
        for label, n in names:
            add(f"name {label} {ver}", "POST", V, e, ver, body={"keypair": {"name": n, "public_key": okpk}})
    for label, n in (("int", 5), ("null", None), ("list", ["a"]), ("bool", True), ("object", {"a": 1})):
        add(f"name non-string {label}", "POST", V, e, "2.2", body={"keypair": {"name": n, "public_key": okpk}})
    add("name 255 chars ok 2.2", "POST", V, i, "2.2", body={"keypair": {"name": "b" * 255, "public_key": okpk}})
    add("name with inner space ok 2.2", "POST", V, i, "2.2",
        body={"keypair": {"name": "has inner space", "public_key": okpk}})
    add("name @ and . ok 2.92", "POST", V, i, "2.92", body={"keypair": {"name": "a@b.c", "public_key": okpk}})
    add("name missing", "POST", V, e, "2.2", body={"keypair": {"public_key": okpk}})
    add("public_key missing 2.92", "POST", V, e, "2.92", body={"keypair": {"name": "nopk"}})
    add("name+public_key missing 2.92", "POST", V, e, "2.92", body={"keypair": {}})

    # ---- body shape / content type
    add("body not JSON", "POST", V, e, "2.2", raw="{bad json")
    add("body empty", "POST", V, e, "2.2", raw=b"")
    add("body empty no content-type", "POST", V, e, "2.2", raw=b"", ctype=None)
    add("body absent (no Content-Length body)", "POST", V, e, "2.2")
    add("body []", "POST", V, e, "2.2", raw="[]")
    add("body null", "POST", V, e, "2.2", raw="null")
    add("body string", "POST", V, e, "2.2", raw='"x"')
    add("body {} (missing keypair)", "POST", V, e, "2.2", raw="{}")
    add("extra top-level key", "POST", V, e, "2.2", body={"keypair": {"name": "x", "public_key": okpk}, "extra": 1})
    add("keypair not object (string)", "POST", V, e, "2.2", body={"keypair": "abc"})
    add("keypair not object (list)", "POST", V, e, "2.2", body={"keypair": [1, "a"]})
    add("keypair null", "POST", V, e, "2.2", body={"keypair": None})
    add("extra property 2.1", "POST", V, e, None, body={"keypair": {"name": "x", "public_key": okpk, "foo": 1}})
    add("extra property 2.2", "POST", V, e, "2.2", body={"keypair": {"name": "x", "public_key": okpk, "foo": 1}})
    add("content-type text/plain", "POST", V, i, "2.2",
        body={"keypair": {"name": "ct-text", "public_key": okpk}}, ctype="text/plain")
    add("content-type application/xml", "POST", V, e, "2.2",
        body={"keypair": {"name": "ct-xml", "public_key": okpk}}, ctype="application/xml")
    add("content-type json;charset=UTF-8", "POST", V, i, "2.2",
        body={"keypair": {"name": "ct-charset", "public_key": okpk}}, ctype="application/json;charset=UTF-8")
    add("content-type vnd.openstack.compute+json", "POST", V, i, "2.2",
        body={"keypair": {"name": "ct-vnd", "public_key": okpk}}, ctype="application/vnd.openstack.compute+json")
    add("content-type APPLICATION/JSON", "POST", V, i, "2.2",
        body={"keypair": {"name": "ct-upper", "public_key": okpk}}, ctype="APPLICATION/JSON", tags={"ctcase"})
    add("content-type absent", "POST", V, i, "2.2",
        body={"keypair": {"name": "ct-none", "public_key": okpk}}, ctype=None)
    add("content-type xml + bad json", "POST", V, e, "2.2", raw="<x/>", ctype="application/xml")
    add("list with content-type xml", "GET", V, lt, "2.2", headers=[("Content-Type", "application/xml")],
        tags={"ctget"})
    add("delete with content-type xml", "DELETE", V + "/nope", e, "2.2", headers=[("Content-Type", "application/xml")],
        tags={"ctget"})
    add("list with content-type text/html", "GET", V, lt, "2.2", headers=[("Content-Type", "text/html")],
        tags={"ctget"})
    add("list with content-type application/json", "GET", V, lt, "2.2",
        headers=[("Content-Type", "application/json")])

    # ---- which error wins when several properties are wrong (jsonschema iteration order)
    for label, body, ver in (
            ("extra top-level key + keypair not object", {"keypair": "abc", "extra": 1}, "2.2"),
            ("extra top-level key + bad name", {"keypair": {"name": "a/b"}, "extra": 1}, "2.2"),
            ("extra property + bad name", {"keypair": {"name": "a/b", "foo": 1}}, "2.2"),
            ("extra property + bad type", {"keypair": {"name": "ok", "type": "rsa", "foo": 1}}, "2.2"),
            ("extra property + public_key int", {"keypair": {"name": "ok", "public_key": 1, "foo": 1}}, "2.2"),
            ("missing name + extra property", {"keypair": {"foo": 1}}, "2.2"),
            ("missing name + bad type", {"keypair": {"type": "rsa"}}, "2.2"),
            ("missing name + public_key int", {"keypair": {"public_key": 1}}, "2.2"),
            ("bad name + bad type", {"keypair": {"name": "a/b", "type": "rsa"}}, "2.2"),
            ("bad type + public_key int", {"keypair": {"name": "ok", "type": "rsa", "public_key": 1}}, "2.2"),
            ("public_key int + user_id int", {"keypair": {"name": "ok", "public_key": 1, "user_id": 1}}, "2.10"),
            ("missing public_key + bad name 2.92", {"keypair": {"name": "a/b"}}, "2.92"),
            ("type at 2.1 + bad name", {"keypair": {"name": "a/b", "type": "ssh"}}, None),
    ):
        add(f"precedence: {label}", "POST", V, e, ver, body=body)

    # ---- duplicates
    add("duplicate name 2.2", "POST", V, i, "2.2", body={"keypair": {"name": "imp-rsa", "public_key": okpk}})
    add("duplicate name generate 2.1", "POST", V, i, None, body={"keypair": {"name": "imp-rsa"}})
    add("duplicate name differs in case (ok)", "POST", V, i, "2.2",
        body={"keypair": {"name": "IMP-RSA", "public_key": okpk}})

    # ---- admin / user_id at 2.10
    a = tok(U_ADM, roles="admin")
    add("admin create for other 2.10", "POST", V, a, "2.10",
        body={"keypair": {"name": "adm-made", "public_key": okpk, "user_id": U_OTHER}})
    add("admin create for other 2.9 (400)", "POST", V, a, "2.9",
        body={"keypair": {"name": "adm-made9", "public_key": okpk, "user_id": U_OTHER}})
    add("non-admin create for other 2.10 (403)", "POST", V, e, "2.10",
        body={"keypair": {"name": "na-made", "public_key": okpk, "user_id": U_OTHER}})
    add("non-admin create for other with bad name 2.10", "POST", V, e, "2.10",
        body={"keypair": {"name": "bad/name", "public_key": okpk, "user_id": U_OTHER}})
    add("admin list other 2.10", "GET", V + f"?user_id={U_OTHER}", a, "2.10")
    add("admin list other 2.9 (ignored)", "GET", V + f"?user_id={U_OTHER}", a, "2.9")
    add("admin list other empty user_id 2.10", "GET", V + "?user_id=", a, "2.10")
    add("admin show other 2.10", "GET", V + f"/adm-made?user_id={U_OTHER}", a, "2.10")
    add("admin show other 2.2 (not found)", "GET", V + f"/adm-made?user_id={U_OTHER}", a, "2.2")
    add("non-admin list other 2.10 (403)", "GET", V + f"?user_id={U_OTHER}", e, "2.10")
    add("non-admin show other 2.10 (403)", "GET", V + f"/adm-made?user_id={U_OTHER}", e, "2.10")
    add("non-admin delete other 2.10 (403)", "DELETE", V + f"/adm-made?user_id={U_OTHER}", e, "2.10")
    add("non-admin show own via user_id 2.10", "GET", V + f"/imp-rsa?user_id={U_IMP}", i, "2.10")
    add("other user lists own keys", "GET", V, tok(U_OTHER), "2.2")
    add("admin list other repeated user_id", "GET", V + f"?user_id={U_OTHER}&user_id={U_ADM}", a, "2.10")
    add("admin delete other 2.10", "DELETE", V + f"/adm-made?user_id={U_OTHER}", a, "2.10")
    add("admin show deleted other 2.10 (404)", "GET", V + f"/adm-made?user_id={U_OTHER}", a, "2.10")

    # ---- list paging (2.35)
    for n in ("page-1", "page-2", "page-3", "page 4", "page@5"):
        ver = "2.92" if "@" in n else "2.2"
        add(f"list setup import '{n}'", "POST", V, lt, ver, body={"keypair": {"name": n, "public_key": okpk}})
    for q in ("", "?limit=0", "?limit=1", "?limit=2", "?limit=5", "?limit=1000", "?limit=1001", "?limit=-1",
              "?limit=abc", "?limit=", "?limit=1&limit=2", "?limit=2&limit=10", "?limit=3&limit=1",
              "?marker=page-1", "?marker=page-2&limit=2", "?marker=page%204&limit=1", "?marker=page-3&limit=1",
              "?marker=nope", "?marker=", "?limit=2&marker=page-1&marker=page-2",
              f"?user_id={U_LIST}&limit=2", "?limit=2&foo=bar", "?limit=1.5", "?limit=%2B1", "?limit=01"):
        add(f"list 2.35 {q or '(no query)'}", "GET", V + q, lt, "2.35")
    add("list 2.35 project-less ?limit=2", "GET", VL + "?limit=2", lt, "2.35")
    add("list 2.35 project-less ?limit=1&marker=page-2", "GET", VL + "?limit=1&marker=page-2", lt, "2.35")
    add("list 2.35 project-less user_id", "GET", VL + f"?limit=3&user_id={U_LIST}", lt, "2.35")
    add("list 2.2 ?limit=1 (ignored)", "GET", V + "?limit=1", lt, "2.2")
    add("list 2.1 ?limit=1&marker=zzz (ignored)", "GET", V + "?limit=1&marker=zzz", lt, None)
    add("list 2.34 ?limit=abc (ignored)", "GET", V + "?limit=abc", lt, "2.34")
    add("list 2.92 ?limit=2", "GET", V + "?limit=2", lt, "2.92")
    add("list latest ?limit=2", "GET", V + "?limit=2", lt, "latest", tags={"maxver"})
    add("show url-encoded space", "GET", V + "/page%204", lt, "2.2")
    add("show url-encoded @", "GET", V + "/page%405", lt, "2.2")
    add("show raw @", "GET", V + "/page@5", lt, "2.2")

    # ---- 2.74 vs 2.75 unknown query params
    for ver in ("2.74", "2.75"):
        add(f"list unknown param {ver}", "GET", V + "?foo=1", lt, ver)
        add(f"show unknown param {ver}", "GET", V + "/page-1?foo=1", lt, ver)
        add(f"show unknown param unknown key {ver}", "GET", V + "/nope?foo=1", lt, ver)
        add(f"delete unknown param unknown key {ver}", "DELETE", V + "/nope?foo=1", lt, ver)
    add("list 2.75 limit+marker+user_id ok", "GET", V + f"?limit=1&marker=page-1&user_id={U_LIST}", lt, "2.75")
    add("list 2.75 two unknown params", "GET", V + "?b=1&a=2", lt, "2.75")
    add("show 2.75 user_id ok", "GET", V + f"/page-1?user_id={U_LIST}", lt, "2.75")
    add("show 2.75 limit (unknown for show)", "GET", V + "/page-1?limit=1", lt, "2.75")

    # ---- 404s
    add("show unknown 2.1", "GET", V + "/nope", e, None)
    add("show unknown url-encoded spaces", "GET", V + "/no%20such%20key", e, "2.2")
    add("show unknown 2.92", "GET", V + "/no.such@key", e, "2.92")
    add("delete unknown 2.1", "DELETE", V + "/nope", e, None)
    add("delete unknown 2.2", "DELETE", V + "/no%20such", e, "2.2")
    add("show unknown project-less", "GET", VL + "/nope", e, "2.2")

    # ---- delete 2.1 (202) vs 2.2 (204)
    d = tok(U_DEL)
    add("delete setup 1", "POST", V, d, "2.2", body={"keypair": {"name": "del-1", "public_key": okpk}})
    add("delete setup 2", "POST", V, d, "2.2", body={"keypair": {"name": "del 2", "public_key": okpk}})
    add("delete setup 3", "POST", V, d, "2.2", body={"keypair": {"name": "del-3", "public_key": okpk}})
    add("delete 2.1 (202)", "DELETE", V + "/del-1", d, None)
    add("delete again (404)", "DELETE", V + "/del-1", d, None)
    add("delete 2.2 url-encoded (204)", "DELETE", V + "/del%202", d, "2.2")
    add("delete project-less 2.2", "DELETE", VL + "/del-3", d, "2.2")
    add("list after deletes", "GET", V, d, "2.2")
    add("re-create deleted name", "POST", V, d, "2.2", body={"keypair": {"name": "del-1", "public_key": okpk}})

    # ---- project mismatch
    add("project mismatch list", "GET", f"/v2.1/{P2}/os-keypairs", e, "2.2")
    add("project mismatch show", "GET", f"/v2.1/{P2}/os-keypairs/nope", e, "2.2")
    add("project mismatch create bad body", "POST", f"/v2.1/{P2}/os-keypairs", e, "2.2", raw="[]")
    add("project mismatch create not JSON", "POST", f"/v2.1/{P2}/os-keypairs", e, "2.2", raw="{bad")
    add("project mismatch admin", "GET", f"/v2.1/{P2}/os-keypairs", a, "2.2")
    add("project mismatch 2.75 unknown param", "GET", f"/v2.1/{P2}/os-keypairs?foo=1", e, "2.75")

    # ---- microversion headers
    for label, hdrs in (
            ("latest", [("OpenStack-API-Version", "compute latest")]),
            ("LATEST", [("OpenStack-API-Version", "compute LATEST")]),
            ("Latest legacy header", [("X-OpenStack-Nova-API-Version", "Latest")]),
            ("2.200", [("OpenStack-API-Version", "compute 2.200")]),
            ("2.0", [("OpenStack-API-Version", "compute 2.0")]),
            ("3.0", [("OpenStack-API-Version", "compute 3.0")]),
            ("1.1", [("OpenStack-API-Version", "compute 1.1")]),
            ("2.01", [("OpenStack-API-Version", "compute 2.01")]),
            ("2.", [("OpenStack-API-Version", "compute 2.")]),
            ("abc", [("OpenStack-API-Version", "compute abc")]),
            ("empty value", [("OpenStack-API-Version", "compute ")]),
            ("service only", [("OpenStack-API-Version", "compute")]),
            ("service only + legacy 2.35", [("OpenStack-API-Version", "compute"),
                                            ("X-OpenStack-Nova-API-Version", "2.35")]),
            ("empty value + legacy 2.35", [("OpenStack-API-Version", "compute "),
                                           ("X-OpenStack-Nova-API-Version", "2.35")]),
            ("malformed new + legacy 2.35", [("OpenStack-API-Version", "compute 2.01"),
                                             ("X-OpenStack-Nova-API-Version", "2.35")]),
            ("legacy empty", [("X-OpenStack-Nova-API-Version", "")]),
            ("new header empty", [("OpenStack-API-Version", "")]),
            ("legacy only 2.35", [("X-OpenStack-Nova-API-Version", "2.35")]),
            ("legacy latest", [("X-OpenStack-Nova-API-Version", "latest")]),
            ("legacy 2.200", [("X-OpenStack-Nova-API-Version", "2.200")]),
            ("legacy malformed 2.01", [("X-OpenStack-Nova-API-Version", "2.01")]),
            ("both headers (new wins)", [("OpenStack-API-Version", "compute 2.2"),
                                         ("X-OpenStack-Nova-API-Version", "2.35")]),
            ("new header other service + legacy", [("OpenStack-API-Version", "volume 3.0"),
                                                  ("X-OpenStack-Nova-API-Version", "2.35")]),
            ("whitespace 'compute  2.10 '", [("OpenStack-API-Version", "compute  2.10 ")]),
            ("COMPUTE upper service", [("OpenStack-API-Version", "COMPUTE 2.10")]),
            ("volume 3.0, compute 2.35", [("OpenStack-API-Version", "volume 3.0, compute 2.35")]),
            ("compute 2.35, volume 3.0", [("OpenStack-API-Version", "compute 2.35, volume 3.0")]),
            ("other service only", [("OpenStack-API-Version", "volume 3.0")]),
            ("compute twice 'compute 2.2, compute 2.35'", [("OpenStack-API-Version", "compute 2.2, compute 2.35")]),
            ("legacy list '2.2, 2.35'", [("X-OpenStack-Nova-API-Version", "2.2, 2.35")]),
            ("new header twice", [("OpenStack-API-Version", "compute 2.2"), ("OpenStack-API-Version", "compute 2.35")]),
            ("trailing junk 'compute 2.10 x'", [("OpenStack-API-Version", "compute 2.10 x")]),
            ("2.104 (Nova max)", [("OpenStack-API-Version", "compute 2.104")]),
            ("2.96 (kps max)", [("OpenStack-API-Version", "compute 2.96")]),
            ("2.97", [("OpenStack-API-Version", "compute 2.97")]),
    ):
        tags = {"maxver"}
        add(f"microversion {label} list", "GET", V, lt, None, headers=hdrs, tags=tags)
    add("microversion 2.200 on create bad body", "POST", V, e, "2.200", raw="[]", tags={"maxver"})
    add("microversion 2.01 on create bad body", "POST", V, e, "2.01", raw="{bad")
    add("microversion 2.01 with no token", "GET", V, None, "2.01", tags={"auth401"})

    # ---- legacy v2
    lg = tok(U_LEG)
    add("legacy v2 generate (ignores 2.92 header)", "POST", LEG, lg, "2.92",
        body={"keypair": {"name": "leg-gen"}}, gen=True)
    add("legacy v2 generate legacy header", "POST", LEG, lg, None,
        headers=[("X-OpenStack-Nova-API-Version", "2.92")], body={"keypair": {"name": "leg-gen2"}}, gen=True)
    add("legacy v2 import", "POST", LEG, lg, None, body={"keypair": {"name": "leg-imp", "public_key": okpk}})
    add("legacy v2 extra property ignored", "POST", LEG, lg, None,
        body={"keypair": {"name": "leg-extra", "public_key": okpk, "foo": 1, "type": "x509"}})
    add("legacy v2 user_id ignored", "POST", LEG, lg, None,
        body={"keypair": {"name": "leg-uid", "public_key": okpk, "user_id": U_OTHER}})
    add("legacy v2 leading/trailing spaces stripped", "POST", LEG, lg, None,
        body={"keypair": {"name": "  leg-sp  ", "public_key": okpk}})
    add("legacy v2 show stripped name", "GET", LEG + "/leg-sp", lg, None)
    add("legacy v2 name with slash-free punct", "POST", LEG, lg, None,
        body={"keypair": {"name": "leg!#$%^&*()", "public_key": okpk}})
    add("legacy v2 name unicode", "POST", LEG, lg, None, body={"keypair": {"name": "ключ", "public_key": okpk}})
    add("legacy v2 name only spaces", "POST", LEG, lg, None, body={"keypair": {"name": "   ", "public_key": okpk}})
    add("legacy v2 name empty", "POST", LEG, lg, None, body={"keypair": {"name": "", "public_key": okpk}})
    add("legacy v2 name tab", "POST", LEG, lg, None, body={"keypair": {"name": "a\tb", "public_key": okpk}})
    add("legacy v2 name 256", "POST", LEG, lg, None, body={"keypair": {"name": "c" * 256, "public_key": okpk}})
    add("legacy v2 name null", "POST", LEG, lg, None, body={"keypair": {"name": None, "public_key": okpk}})
    add("legacy v2 extra top-level key", "POST", LEG, lg, None,
        body={"keypair": {"name": "leg-top", "public_key": okpk}, "x": 1})
    add("legacy v2 public_key null", "POST", LEG, lg, None, body={"keypair": {"name": "leg-null", "public_key": None}})
    add("legacy v2 list", "GET", LEG, lg, "2.35", gen=True)
    add("legacy v2 list ?limit=1 (ignored)", "GET", LEG + "?limit=1&foo=2", lg, None, gen=True)
    add("legacy v2 show", "GET", LEG + "/leg-imp", lg, "2.2")
    add("legacy v2 show with header 2.200", "GET", LEG + "/leg-imp", lg, "2.200")
    add("legacy v2 show with header malformed", "GET", LEG + "/leg-imp", lg, "2.01")
    add("legacy v2 delete (202)", "DELETE", LEG + "/leg-imp", lg, "2.2")
    add("legacy v2 delete unknown", "DELETE", LEG + "/leg-imp", lg, None)
    add("legacy v2 project mismatch", "GET", f"/v2/{P2}/os-keypairs", lg, None)
    add("legacy v2 no token", "GET", LEG, None, None, tags={"auth401"})
    add("legacy v2 duplicate", "POST", LEG, lg, None, body={"keypair": {"name": "leg-gen", "public_key": okpk}})

    # ---- quota (default 100 on both sides)
    q = tok(U_QUOTA)
    for n in range(100):
        add(f"quota setup {n:03d}", "POST", V, q, "2.2",
            body={"keypair": {"name": f"q-{n:03d}", "public_key": okpk}}, tags={"quiet"})
    add("quota 101st import (403)", "POST", V, q, "2.2", body={"keypair": {"name": "q-101", "public_key": okpk}})
    add("quota 101st generate (403)", "POST", V, q, "2.2", body={"keypair": {"name": "q-101g"}})
    add("quota full + bad key (403 first)", "POST", V, q, "2.2",
        body={"keypair": {"name": "q-bad", "public_key": "garbage"}})
    add("quota full + duplicate (403 first)", "POST", V, q, "2.2",
        body={"keypair": {"name": "q-000", "public_key": okpk}})
    add("quota full + bad name (400 first)", "POST", V, q, "2.2",
        body={"keypair": {"name": "q/bad", "public_key": okpk}})
    add("quota admin creates for full user", "POST", V, a, "2.10",
        body={"keypair": {"name": "q-adm", "public_key": okpk, "user_id": U_QUOTA}})
    add("quota list 2.35 limit=1000", "GET", V + "?limit=1000", q, "2.35")
    add("quota list 2.35 limit=1001", "GET", V + "?limit=1001", q, "2.35")
    add("quota list 2.35 limit=100 (full page)", "GET", V + "?limit=100", q, "2.35")
    add("quota list 2.35 limit=99 marker=q-000", "GET", V + "?limit=99&marker=q-000", q, "2.35")
    add("quota delete one", "DELETE", V + "/q-050", q, "2.2")
    add("quota create after delete", "POST", V, q, "2.2", body={"keypair": {"name": "q-new", "public_key": okpk}})

    # ---- README deliberate differences (expected)
    add("non-hex project id", "GET", "/v2.1/p-42/os-keypairs", tok(U_ERR, "p-42"), "2.2", tags={"nonhex"})
    add("PUT on collection", "PUT", V, e, "2.2", raw="{}", tags={"method"})
    add("PATCH on key", "PATCH", V + "/nope", e, "2.2", raw="{}", tags={"method"})
    add("OPTIONS on collection", "OPTIONS", V, e, "2.2", tags={"method"})
    add("HEAD on list", "HEAD", V, lt, "2.2", tags={"method"})
    add("trailing slash on collection", "GET", V + "/", e, "2.2", tags={"unroute"})
    add("trailing slash on key", "GET", V + "/page-1/", lt, "2.2", tags={"unroute"})
    add("unknown path under /v2.1", "GET", f"/v2.1/{P}/os-nothing", e, "2.2", tags={"unroute"})
    add("unknown path at root", "GET", "/nothing", None, None, tags={"unroute"})
    big = json.dumps({"keypair": {"name": "big", "public_key": "x" * 115000}})
    add("413 body > 114688 bytes", "POST", V, e, "2.2", raw=big, tags={"big"})
    add("413 body > 114688 bytes, no token", "POST", V, None, "2.2", raw=big, tags={"big"})
    exact = json.dumps({"keypair": {"name": "big", "public_key": "x" * (114688 - 46)}})
    assert len(exact) == 114688
    add("body of exactly 114688 bytes (not 413)", "POST", V, e, "2.2", raw=exact)
    return C


# --------------------------------------------------------------------------------------------------------------
# Normalisation

REQ_ID_RE = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def mask_generated(obj):
    """Replace generated key material by its shape."""
    if not isinstance(obj, dict):
        return obj
    o = dict(obj)
    pk = o.get("public_key")
    if isinstance(pk, str):
        if pk.startswith("-----BEGIN CERTIFICATE-----"):
            o["public_key"] = "<x509 certificate PEM>"
        else:
            parts = pk.split(" ")
            if len(parts) >= 2:
                parts[1] = "<blob>"
            o["public_key"] = " ".join(parts)
    pv = o.get("private_key")
    if isinstance(pv, str):
        if pv.startswith("-----BEGIN "):
            lines = pv.split("\n")
            o["private_key"] = f"{lines[0]}...{lines[-2] if len(lines) > 1 else ''}<nl={pv.endswith(chr(10))}>"
        elif re.fullmatch(r"[A-Za-z0-9+/=]+", pv):
            o["private_key"] = "<single-line base64>"
        else:
            o["private_key"] = "<other>"
    fp = o.get("fingerprint")
    if isinstance(fp, str):
        o["fingerprint"] = re.sub(r"[0-9a-f]{2}", "xx", fp)
    return o


def normalise_body(obj, gen, base):
    def walk(x, key=None):
        if isinstance(x, dict):
            out = {}
            for k, v in x.items():
                if k == "id" and isinstance(v, int) and not isinstance(v, bool):
                    out[k] = "<id>"
                elif k == "created_at" and isinstance(v, str):
                    ok = re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", v) is not None
                    out[k] = "<timestamp>" if ok else f"<bad timestamp {v!r}>"
                else:
                    out[k] = walk(v, k)
            if gen and ("public_key" in out or "private_key" in out):
                out = mask_generated(out)
            return out
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, str):
            return REQ_ID_RE.sub("req-<id>", x.replace(base, "http://HOST"))
        return x
    return walk(obj)


def media_type(v):
    return v.split(";")[0].strip().lower() if v is not None else None


def normalise(resp, case, base, side):
    """-> (dict view used for comparison, list of kps-only problems)."""
    problems = []
    view = {"status": resp.status}
    h = {}
    if resp.first("content-type") is not None:
        h["content-type"] = media_type(resp.first("content-type"))
    for name in ("openstack-api-version", "x-openstack-nova-api-version"):
        vals = resp.get(name)
        if vals:
            h[name] = vals if len(vals) > 1 else vals[0]
    vary = []
    for v in resp.get("vary"):
        vary += [t.strip().lower() for t in v.split(",") if t.strip()]
    if vary:
        h["vary"] = sorted(set(vary))
    if resp.status in (202, 204):
        h["content-length"] = resp.first("content-length")
    if resp.first("location") is not None:
        h["location"] = resp.first("location").replace(base, "http://HOST")
    for name in ("cache-control", "pragma"):
        if resp.first(name) is not None:
            h[name] = resp.first(name)
    h["has x-openstack-request-id"] = bool(resp.get("x-openstack-request-id"))
    h["has x-compute-request-id"] = bool(resp.get("x-compute-request-id"))
    if "allow" in [k for k, _ in resp.headers]:
        h["allow"] = resp.first("allow")
    view["headers"] = h
    raw = resp.body
    if not raw:
        view["body"] = None
    else:
        try:
            body = json.loads(raw)
        except ValueError:
            view["body"] = "<non-JSON body: %r>" % raw[:120]
            return view, problems
        if resp.status >= 400 and isinstance(body, dict) and body:
            keys = list(body.keys())
            if side == "kps":
                # README bullet 5: kps error bodies add error_code / error_msg after the Nova fault key.
                if keys[1:] != ["error_code", "error_msg"]:
                    problems.append(f"kps error body keys {keys} (want [<fault>, 'error_code', 'error_msg'])")
                else:
                    fault = body[keys[0]]
                    msg = fault.get("message") if isinstance(fault, dict) else None
                    if body.get("error_msg") != msg:
                        problems.append(f"kps error_msg {body.get('error_msg')!r} != message {msg!r}")
                    if not re.fullmatch(r"KPS\.\d{4}", str(body.get("error_code"))):
                        problems.append(f"kps error_code {body.get('error_code')!r} malformed")
                body = {keys[0]: body[keys[0]]}
        view["body"] = normalise_body(body, case.gen, base)
    if case.gen and resp.status in (200, 201) and case.method == "POST":
        if side == "kps" and (resp.first("cache-control") != "no-store" or resp.first("pragma") != "no-cache"):
            problems.append("kps generated key without Cache-Control: no-store / Pragma: no-cache")
    return view, problems


def diff(a, b, path=""):
    """Compact list of differences between two normalised views."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a.keys()) + [k for k in b if k not in a]:
            if k not in b:
                out.append(f"{path}/{k}: nova={short(a[k])} kps=<absent>")
            elif k not in a:
                out.append(f"{path}/{k}: nova=<absent> kps={short(b[k])}")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and not all(
            isinstance(x, str) for x in a + b):
        for n, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{path}[{n}]")
        return out
    if a != b:
        out.append(f"{path}: nova={short(a)} kps={short(b)}")
    return out


def short(v, n=400):
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[:n] + "..."


# --------------------------------------------------------------------------------------------------------------
# Classification of differences.
#
# EXPECTED: the deliberate differences listed in /work/shared/nova-peer/README.md (explicit allow-list below,
#           one entry per README bullet, each restricted to the cases tagged for it).
# SPEC:     kps does what /work/shared/spec/*.md prescribes, and the spec there contradicts Nova 34.0.0 without
#           the README listing it as deliberate.  Not counted as failures, but printed and counted separately
#           so the spec owner can decide.
# Anything else is a DIFF (failure).
#
# Each rule: (kind, reason, applies(case) -> bool, neutralise(case, nova_view, kps_view) -> (nova, kps)).
# A rule neutralises exactly the difference it describes; the case is classified only if, after every
# applicable rule ran, nothing else differs.

import copy  # noqa: E402

SAME = "<neutralised>"


def _sub_max(view):
    """Nova 34.0.0's maximum 2.104 -> kps's 2.96, wherever it appears."""
    def w(x):
        if isinstance(x, dict):
            return {k: w(v) for k, v in x.items()}
        if isinstance(x, list):
            return [w(v) for v in x]
        if isinstance(x, str):
            return x.replace("2.104", "2.96")
        return x
    return w(view)


def _status_rule(pred):
    """Whole-response rule: when pred holds both answers are considered equal."""
    def fn(c, n, k):
        return (SAME, SAME) if pred(c, n, k) else (n, k)
    return fn


def _msg(view):
    b = view.get("body") if isinstance(view, dict) else None
    if isinstance(b, dict) and len(b) == 1:
        v = next(iter(b.values()))
        if isinstance(v, dict):
            return v.get("message")
    return None


def _drop_gen_cache_headers(c, n, k):
    kh = k["headers"]
    if ("cache-control" not in n["headers"] and "pragma" not in n["headers"]
            and kh.get("cache-control") == "no-store" and kh.get("pragma") == "no-cache"):
        k = copy.deepcopy(k)
        del k["headers"]["cache-control"], k["headers"]["pragma"]
    return n, k


def _root_request_ids(c, n, k):
    nh, kh = n["headers"], k["headers"]
    if not nh["has x-openstack-request-id"] and not nh["has x-compute-request-id"]:
        k = copy.deepcopy(k)
        k["headers"]["has x-openstack-request-id"] = False
        k["headers"]["has x-compute-request-id"] = False
    return n, k


def _x509_detail(c, n, k):
    pre = "Keypair data is invalid: failed to generate X509 fingerprint. Error message: "
    mn, mk = _msg(n), _msg(k)
    if n["status"] == k["status"] == 400 and mn and mk and mn.startswith(pre) and mk.startswith(pre):
        n, k = copy.deepcopy(n), copy.deepcopy(k)
        n["body"]["badRequest"]["message"] = k["body"]["badRequest"]["message"] = pre + "<detail>"
    return n, k


def _auth_body(c, n, k):
    # the peer's auth filter answers like keystonemiddleware: {"error": {"code": 401, "title", "message"}}
    nb, kb = n.get("body"), k.get("body")
    if (n["status"] == k["status"] == 401 and isinstance(nb, dict) and list(nb) == ["error"]
            and isinstance(kb, dict) and list(kb) == ["unauthorized"] and kb["unauthorized"].get("code") == 401
            and kb["unauthorized"].get("message") in ("Authentication required",
                                                       "Invalid authentication credentials")):
        n, k = copy.deepcopy(n), copy.deepcopy(k)
        n["body"] = k["body"] = SAME
    return n, k


def _tag(t):
    return lambda c: t in c.tags


RULES = [
    # ---- EXPECTED: README bullets ----------------------------------------------------------------------------
    # README bullet "Maximum microversion: kps 2.96, Nova 34.0.0 2.104 (os-keypairs is unchanged after 2.92)":
    # version documents, `latest` echoes and the 406 message name the maximum.
    ("EXPECTED", "README: Maximum microversion (kps 2.96, Nova 2.104)", _tag("maxver"),
     lambda c, n, k: (_sub_max(n), k)),
    # Same bullet: versions in (2.96, 2.104] are valid on Nova and 406 on kps.
    ("EXPECTED", "README: Maximum microversion (kps 2.96, Nova 2.104): version in (2.96, 2.104]", _tag("maxver"),
     _status_rule(lambda c, n, k: n["status"] == 200 and k["status"] == 406
                  and any(re.search(r"\b2\.(9[7-9]|10[0-4])\b", v) for _, v in c.headers))),
    # README bullet "Project segment: kps routes any {project_id} of 1-255 characters other than /; Nova routes
    # only hex ([0-9a-f-]+) and answers 404 for anything else."
    ("EXPECTED", "README: Project segment (Nova routes only hex project ids)", _tag("nonhex"),
     _status_rule(lambda c, n, k: n["status"] == 404)),
    # README bullet "Unsupported method on a known path: kps 405 + Allow; Nova 404. OPTIONS: kps 405 + Allow;
    # Nova 200 with an empty body. HEAD on a GET route: kps answers as the GET without a body; Nova 404."
    ("EXPECTED", "README: Unsupported method / OPTIONS / HEAD", _tag("method"),
     _status_rule(lambda c, n, k:
                  (c.method == "OPTIONS" and n["status"] == 200 and k["status"] == 405 and "allow" in k["headers"])
                  or (c.method == "HEAD" and n["status"] == 404 and k["status"] == 200 and k["body"] is None)
                  or (c.method not in ("OPTIONS", "HEAD") and n["status"] == 404 and k["status"] == 405
                      and "allow" in k["headers"]))),
    # README bullet "Unknown routes (and 413): kps sends its JSON error body whatever Accept says; Nova sends
    # webob's body (HTML for Accept: */*), and 300 choices for unknown paths at the root."
    ("EXPECTED", "README: Unknown routes (webob body / 300 choices on Nova)", _tag("unroute"),
     _status_rule(lambda c, n, k: k["status"] == 404 and n["status"] in (404, 300))),
    # Same bullet, "(and 413)": both 413, bodies differ (webob's vs kps's JSON error).
    ("EXPECTED", "README: 413 body (webob body on Nova)", _tag("big"),
     _status_rule(lambda c, n, k: n["status"] == k["status"] == 413)),
    # README bullet "Extensions Nova does not have: key_protection (KPS V2.1 custody) and algorithm on create."
    ("EXPECTED", "README: Extensions key_protection / algorithm", _tag("ext"),
     _status_rule(lambda c, n, k: n["status"] == 400 and k["status"] in (200, 201)
                  and "Additional properties are not allowed" in (_msg(n) or ""))),
    # README bullet "Every kps error body adds error_code/error_msg, and every error has Content-Type:
    # application/json (Nova faults say application/json; charset=UTF-8)": handled structurally in
    # normalise() (fault key compared, error_code/error_msg checked then removed; media type compared without
    # parameters), so it needs no rule here.

    # ---- SPEC: kps follows the spec, the spec contradicts Nova (not in the README) -----------------------------
    # nova-keypairs.md §1 "Every response that carries a private key ... adds Cache-Control: no-store and
    # Pragma: no-cache" -- Nova sends neither.
    ("SPEC", "spec nova-keypairs.md §1: Cache-Control/Pragma on generated keys (Nova sends none)",
     lambda c: c.gen and c.method == "POST", _drop_gen_cache_headers),
    # nova-keypairs.md §1 "Every response (success or error, every route) carries one request id" -- Nova's
    # `/` pipeline (oscomputeversions) has no compute_req_id filter, so GET / has no request-id headers.
    ("SPEC", "spec nova-keypairs.md §1: request id on every route (Nova's GET / has none)",
     lambda c: c.path == "/", _root_request_ids),
    # errors.md §3.11 KPS.2001/2002 ("Authentication required" / "Invalid authentication credentials" under
    # the Nova key `unauthorized`) -- the peer answers like keystonemiddleware: {"error": {..., "title"}}.
    ("SPEC", "spec errors.md §3.11: 401 body (Nova+keystonemiddleware sends {\"error\": {...}})",
     _tag("auth401"), _auth_body),
    # errors.md KPS.1202 "... Error message: <detail>" -- <detail> is kps's own text; Nova's is cryptography's.
    ("SPEC", "spec errors.md KPS.1202: X509 error <detail> text is implementation specific",
     _tag("x509bad"), _x509_detail),
    # nova-keypairs.md §6.1 "A tab, two consecutive spaces between the fields ... -> KPS.1201" -- Nova accepts
    # a double space and fingerprints the empty second field (MD5 of b"").
    ("SPEC", "spec nova-keypairs.md §6.1: double space rejected (Nova accepts it, fingerprint = MD5 of empty)",
     _tag("dblspace"),
     _status_rule(lambda c, n, k: n["status"] == 201 and k["status"] == 400
                  and (n["body"] or {}).get("keypair", {}).get("fingerprint") ==
                  "d4:1d:8c:d9:8f:00:b2:04:e9:80:09:98:ec:f8:42:7e"
                  and _msg(k) == "Keypair data is invalid: failed to generate fingerprint")),
    # nova-keypairs.md §6.1 "ssh-dss keys (which Nova cannot load either) -> KPS.1201" and "Well-formed keys of
    # other algorithms (sk-ecdsa-sha2-nistp256@openssh.com, sk-ssh-ed25519@openssh.com, ...) -> KPS.1203" --
    # Nova 34.0.0 with cryptography 50.0.2 loads both (load_ssh_public_key) and imports them.
    ("SPEC", "spec nova-keypairs.md §6.1: ssh-dss / sk-* rejected (Nova 34.0.0 + cryptography 50 imports them)",
     _tag("naccept"),
     _status_rule(lambda c, n, k: n["status"] in (200, 201) and k["status"] == 400
                  and (_msg(k) or "").startswith("Keypair data is invalid: "))),
    # nova-keypairs.md §1 "(media type compared case-insensitively ...)" -- Nova compares it case-sensitively
    # (415 for APPLICATION/JSON).
    ("SPEC", "spec nova-keypairs.md §1: Content-Type media type case-insensitive (Nova: 415)", _tag("ctcase"),
     _status_rule(lambda c, n, k: n["status"] == 415 and k["status"] in (200, 201, 204))),
    # nova-keypairs.md §1 "Any other content type on a body-carrying method (POST, PUT) -> 415" -- Nova checks
    # the Content-Type of every request, GET and DELETE included.
    ("SPEC", "spec nova-keypairs.md §1: 415 only on POST/PUT (Nova: on every method)", _tag("ctget"),
     _status_rule(lambda c, n, k: n["status"] == 415 and k["status"] != 415)),
]


def classify(case, nv, kv):
    """-> (kind, [reasons]) when the applicable rules explain every difference, else None."""
    used = []
    for kind, reason, applies, fn in RULES:
        if not applies(case):
            continue
        try:
            n2, k2 = fn(case, nv, kv)
        except (KeyError, TypeError, AttributeError):
            continue
        if (n2, k2) != (nv, kv):
            used.append((kind, reason))
            nv, kv = n2, k2
    if used and nv == kv:
        kind = "SPEC" if any(k == "SPEC" for k, _ in used) else "EXPECTED"
        return kind, [r for _, r in used]
    return None


# --------------------------------------------------------------------------------------------------------------

def nova_version(base):
    try:
        r = send(base, "GET", "/v2.1/", [("Accept", "application/json")], None)
        v = json.loads(r.body)["version"]
        return f"max microversion {v.get('version')}"
    except Exception as exc:  # noqa: BLE001
        return f"unknown ({exc})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nova", required=True, help="Nova base URL, e.g. http://127.0.0.1:18774")
    ap.add_argument("--kps", required=True, help="kps base URL, e.g. http://127.0.0.1:18775")
    ap.add_argument("--nova-release", default="34.0.0", help="Nova release label for the report header")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the request for every DIFF/EXPECTED")
    ap.add_argument("-k", "--filter", help="only print cases whose name contains this text")
    args = ap.parse_args()
    nova, kps = args.nova.rstrip("/"), args.kps.rstrip("/")

    keys = make_keys()
    cases = build_cases(keys)
    print(f"nova-diff  {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}  run={RUN}")
    print(f"nova: {nova}  (Nova {args.nova_release}, {nova_version(nova)})")
    print(f"kps:  {kps}")
    print(f"project {P}; users u{RUN}<role>; {len(cases)} cases")
    print()
    passed = failed = expected = spec = 0
    for c in cases:
        try:
            rn = send(nova, c.method, c.path, c.headers, c.body)
            rk = send(kps, c.method, c.path, c.headers, c.body)
        except OSError as exc:
            failed += 1
            print(f"DIFF      {c.name}\n    transport error: {exc}")
            continue
        nv, _ = normalise(rn, c, nova, "nova")
        kv, problems = normalise(rk, c, kps, "kps")
        d = diff(nv, kv)
        show = not args.filter or args.filter in c.name
        if not d and not problems:
            passed += 1
            if show and "quiet" not in c.tags:
                print(f"PASS      {c.name}  ({rn.status})")
            continue
        cls = classify(c, nv, kv) if d and not problems else None
        if cls:
            kind, reasons = cls
            if kind == "EXPECTED":
                expected += 1
                passed += 1
            else:
                spec += 1
            if show:
                print(f"{kind:<9} {c.name}  (nova {rn.status}, kps {rk.status}) -- {'; '.join(reasons)}")
                if args.verbose or kind == "SPEC":
                    print("    request: " + c.describe())
                    for line in d:
                        print("    " + line)
            continue
        failed += 1
        if show:
            print(f"DIFF      {c.name}  (nova {rn.status}, kps {rk.status})")
            print("    request: " + c.describe())
            for line in d + problems:
                print("    " + line)
    print()
    print(f"{passed} passed, {failed} failed  ({expected} of the passes are EXPECTED README differences; "
          f"{spec} more cases are SPEC: kps follows a spec rule that contradicts Nova)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
