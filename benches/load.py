#!/usr/bin/env python3
"""Load benchmark content straight into a Distribution registry over HTTP (keep-alive).

Used by benches/bench.sh; nothing here depends on the tool under test.

  load.py image HOST REPO TAG --layers 4 --bytes N --list FILE
      One OCI image: a config and N layers of random (incompressible) data totalling
      --bytes, streamed in 16 MiB PATCH chunks (nothing is held whole in memory).

  load.py tags HOST REPO --start S --count N [--referrers K] [--unique-blobs] --list FILE
      Tags v000000.. (S to S+N-1). Each tag is its own small OCI manifest. With
      --unique-blobs every image has its own config and a 2 KiB layer; without, all images
      share one config and one layer (tiny images: listing and resolution only). With
      --referrers K, each image gets K referrer manifests (subject = the image; an empty
      config and a unique 512-byte layer) and the referrers tag schema index
      (tag sha256-<hex> of the image, listing them, in digest order), as a client would
      write it on a registry without the referrers API (Distribution 2.8).

--list appends what a client needs to fetch to copy the content, one line each:
  M <mediaType> <digest> <size> <role>    a manifest (role: image | referrer)
  B <digest> <size> <role>                a blob (role: image | referrer)
(the tag schema indexes are not listed: they are how referrers are found, not content).

HOST is host:port (plain HTTP; loopback only).
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
CHUNK = 16 << 20


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


class Registry:
    """One keep-alive connection per thread."""

    def __init__(self, host):
        if not (host.startswith("127.0.0.1:") or host.startswith("localhost:")):
            sys.exit(f"load.py: refusing non-loopback registry {host}")
        self.host = host
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, timeout=600)
            self.local.conn = c
        return c

    def request(self, method, path, body=None, headers=None, ok=(200, 201, 202, 204)):
        headers = dict(headers or {})
        if body is None and method in ("POST", "PUT", "PATCH"):
            headers.setdefault("Content-Length", "0")
        for attempt in range(3):
            c = self.conn()
            try:
                c.request(method, path, body=body, headers=headers)
                resp = c.getresponse()
                data = resp.read()
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status not in ok:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {data[:300]!r}")
            return resp, data
        raise RuntimeError("unreachable")

    @staticmethod
    def relative(location):
        u = urllib.parse.urlsplit(location)
        return u.path + ("?" + u.query if u.query else "")

    def blob_exists(self, repo, digest):
        resp, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404))
        return resp.status == 200

    def push_blob(self, repo, data):
        digest = sha256(data)
        if self.blob_exists(repo, digest):
            return digest
        resp, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        loc = self.relative(resp.getheader("Location"))
        sep = "&" if "?" in loc else "?"
        self.request(
            "PUT",
            f"{loc}{sep}digest={digest}",
            body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        return digest

    def push_random_blob(self, repo, size):
        """Streams `size` random bytes as PATCH chunks, hashing as it goes."""
        resp, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        loc = self.relative(resp.getheader("Location"))
        h = hashlib.sha256()
        off = 0
        while off < size:
            n = min(CHUNK, size - off)
            chunk = os.urandom(n)
            h.update(chunk)
            resp, _ = self.request(
                "PATCH",
                loc,
                body=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(n),
                    "Content-Range": f"{off}-{off + n - 1}",
                },
            )
            loc = self.relative(resp.getheader("Location"))
            off += n
        digest = "sha256:" + h.hexdigest()
        sep = "&" if "?" in loc else "?"
        self.request("PUT", f"{loc}{sep}digest={digest}")
        return digest

    def push_manifest(self, repo, ref, media_type, data):
        resp, _ = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=data, headers={"Content-Type": media_type})
        served = resp.getheader("Docker-Content-Digest")
        if served and served != sha256(data):
            raise RuntimeError(f"registry digest {served} differs from {sha256(data)}")
        return sha256(data)


def cmd_image(args):
    reg = Registry(args.host)
    sizes = [args.bytes // args.layers] * args.layers
    sizes[-1] += args.bytes - sum(sizes)
    layers = []
    for s in sizes:
        d = reg.push_random_blob(args.repo, s)
        layers.append({"mediaType": OCI_LAYER, "digest": d, "size": s})
        print(f"  layer {d} ({s} bytes)", file=sys.stderr)
    config = canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]},
            "config": {"Labels": {"bench": args.tag}},
        }
    )
    cd = reg.push_blob(args.repo, config)
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(config)},
            "layers": layers,
        }
    )
    md = reg.push_manifest(args.repo, args.tag, OCI_MANIFEST, manifest)
    with open(args.list, "a") as f:
        f.write(f"M {OCI_MANIFEST} {md} {len(manifest)} image\n")
        f.write(f"B {cd} {len(config)} image\n")
        for x in layers:
            f.write(f"B {x['digest']} {x['size']} image\n")
    print(f"pushed {args.repo}:{args.tag} {md}", file=sys.stderr)


def tag_name(i):
    return f"v{i:06d}"


def cmd_tags(args):
    reg = Registry(args.host)
    repo = args.repo
    lines = []
    lock = threading.Lock()

    shared_config = canonical({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    shared_layer = b"bench shared layer\n" * 8
    emitted_shared = set()
    base_layer = b"bench base layer shared by every repository\n" * 64
    if args.shared_base:
        reg.push_blob(repo, base_layer)
        emitted_shared.add(f"B {sha256(base_layer)} {len(base_layer)} image")
    elif not args.unique_blobs:
        reg.push_blob(repo, shared_config)
        reg.push_blob(repo, shared_layer)
    if args.referrers:
        reg.push_blob(repo, EMPTY_JSON)

    def one(i):
        tag = tag_name(i)
        out = []
        if args.shared_base:
            # A base layer every image of every repository shares, and one of its own.
            layer = os.urandom(2048)
            config = canonical(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [sha256(base_layer), sha256(layer)]},
                    "config": {"Labels": {"bench.tag": f"{repo}:{tag}"}},
                }
            )
            cd = reg.push_blob(repo, config)
            ld = reg.push_blob(repo, layer)
            out.append(f"B {cd} {len(config)} image")
            out.append(f"B {ld} {len(layer)} image")
        elif args.unique_blobs:
            layer = os.urandom(2048)
            config = canonical(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
                    "config": {"Labels": {"bench.tag": tag}},
                }
            )
            cd = reg.push_blob(repo, config)
            ld = reg.push_blob(repo, layer)
            out.append(f"B {cd} {len(config)} image")
            out.append(f"B {ld} {len(layer)} image")
        else:
            config, layer = shared_config, shared_layer
            cd, ld = sha256(config), sha256(layer)
        layers = [{"mediaType": OCI_LAYER, "digest": ld, "size": len(layer)}]
        if args.shared_base:
            layers.insert(0, {"mediaType": OCI_LAYER, "digest": sha256(base_layer), "size": len(base_layer)})
        manifest = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(config)},
                "layers": layers,
                "annotations": {"bench.tag": tag},
            }
        )
        md = reg.push_manifest(repo, tag, OCI_MANIFEST, manifest)
        out.append(f"M {OCI_MANIFEST} {md} {len(manifest)} image")
        refs = []
        for k in range(args.referrers):
            artifact_type = "application/vnd.bench.signature.v1" if k % 2 == 0 else "application/spdx+json"
            blob = os.urandom(512)
            bd = reg.push_blob(repo, blob)
            out.append(f"B {bd} {len(blob)} referrer")
            ref = canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "artifactType": artifact_type,
                    "config": {"mediaType": OCI_EMPTY, "digest": sha256(EMPTY_JSON), "size": 2},
                    "layers": [{"mediaType": "application/octet-stream", "digest": bd, "size": len(blob)}],
                    "subject": {"mediaType": OCI_MANIFEST, "digest": md, "size": len(manifest)},
                    "annotations": {"bench.referrer": f"{tag}/{k}"},
                }
            )
            rd = reg.push_manifest(repo, sha256(ref), OCI_MANIFEST, ref)
            out.append(f"M {OCI_MANIFEST} {rd} {len(ref)} referrer")
            refs.append({"mediaType": OCI_MANIFEST, "digest": rd, "size": len(ref), "artifactType": artifact_type})
        if refs:
            refs.sort(key=lambda d: d["digest"])
            index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": refs})
            reg.push_manifest(repo, "sha256-" + md.split(":", 1)[1], OCI_INDEX, index)
        with lock:
            lines.extend(out)

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        for fut in [pool.submit(one, i) for i in range(args.start, args.start + args.count)]:
            fut.result()

    if not args.unique_blobs and not args.shared_base:
        for data in (shared_config, shared_layer):
            emitted_shared.add(f"B {sha256(data)} {len(data)} image")
    if args.referrers:
        emitted_shared.add(f"B {sha256(EMPTY_JSON)} 2 referrer")
    existing = set()
    if os.path.exists(args.list):
        with open(args.list) as f:
            existing = set(line.rstrip("\n") for line in f)
    with open(args.list, "a") as f:
        for line in sorted(emitted_shared) + lines:
            if line not in existing:
                f.write(line + "\n")
                existing.add(line)
    print(f"pushed {args.count} tag(s) to {repo} ({tag_name(args.start)}..{tag_name(args.start + args.count - 1)})", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("image")
    a.add_argument("host")
    a.add_argument("repo")
    a.add_argument("tag")
    a.add_argument("--layers", type=int, default=4)
    a.add_argument("--bytes", type=int, required=True)
    a.add_argument("--list", required=True)
    t = sub.add_parser("tags")
    t.add_argument("host")
    t.add_argument("repo")
    t.add_argument("--start", type=int, default=0)
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--referrers", type=int, default=0)
    t.add_argument("--unique-blobs", action="store_true")
    t.add_argument("--shared-base", action="store_true", help="two layers per image: one shared by all, one of its own")
    t.add_argument("--threads", type=int, default=8)
    t.add_argument("--list", required=True)
    args = p.parse_args()
    {"image": cmd_image, "tags": cmd_tags}[args.cmd](args)


if __name__ == "__main__":
    main()
