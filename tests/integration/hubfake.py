"""Test doubles for the Hugging Face hub that the REAL ``huggingface_hub`` code talks to:

* ``make_cache``: a hub cache folder exactly as huggingface_hub lays it out
  (``{models,datasets}--org--name/{blobs/<hash>, snapshots/<commit>/<file> -> ../../blobs/<hash>,
  refs/main}``; LFS blobs named by sha256, small files by git blob sha1).
* ``FakeHub``: a local HTTP server on 127.0.0.1 speaking the few hub endpoints a download uses
  (``/api/{models,datasets}/<repo>/revision/<rev>``, ``/api/{models,datasets}/<repo>/tree/<rev>``,
  ``/<repo>/resolve/<rev>/<file>``, ``/datasets/<repo>/resolve/<rev>/<file>``, and for resolving a
  pin ``/api/{models,datasets}/<repo>/refs`` and ``/api/{models,datasets}/<repo>/commits/<rev>``),
  with the hub's error headers for a missing repo, a missing revision and a gated repo. As
  ``huggingface_hub`` (``REGEX_COMMIT_HASH``) a commit revision is a full 40-hex id of the repo's
  history; anything else must be a branch name (``main``): a short sha is *not* accepted. It
  records the Authorization headers it receives, every revision asked for, and every file whose
  content it sent.

  Uploads, as ``HfApi.create_repo`` / ``create_branch`` / ``upload_folder`` make them with the
  classic LFS transfer (``HF_HUB_DISABLE_XET=1``: the Xet protocol needs the hub's CAS service):
  ``POST /api/repos/create``, ``POST /api/{models,datasets}/<repo>/branch/<name>``,
  ``POST /api/validate-yaml`` (the README front matter; a malformed ``model-index`` is refused as
  the hub refuses it), ``POST /api/.../preupload/<rev>``, the git-LFS batch API
  ``POST /<repo>.git/info/lfs/objects/batch`` with basic ``PUT`` uploads (the sha256 is checked),
  and ``POST /api/.../commit/<rev>`` (NDJSON; an LFS pointer to a blob never uploaded is refused).
  Every write needs an Authorization header. A commit replaces the files it names in ``repos``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".jsonl", ".parquet")  # as on the hub


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def is_lfs(name: str) -> bool:
    return name.endswith(LFS_SUFFIXES)


def etag(name: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if is_lfs(name) else git_sha1(data)


def tiny_repo_files() -> dict[str, bytes]:
    """A small model repo: weights, configs, tokenizer, and a pickle that must never be fetched."""
    return {
        "config.json": b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 8}\n',
        "model.safetensors": bytes(range(256)) * 64,
        "tokenizer.json": b'{"version": "1.0", "model": {}}\n',
        "tokenizer_config.json": b'{"bos_token": "<|begin_of_text|>"}\n',
        "pytorch_model.bin": b"PICKLE" * 100,
    }


def tiny_dataset_files(split: str = "train") -> dict[str, bytes]:
    """A small dataset repo as the tulu-2.5 ones: one jsonl shard per split and a card."""
    rows = [
        {"id": f"{split}-{i}", "chosen": [{"role": "user", "content": f"q{i}"}], "score": i}
        for i in range(40)
    ]
    other = [{"id": "other-0", "chosen": [], "score": -1}]
    return {
        "README.md": b"---\nlicense: odc-by\n---\n# tiny dataset\n",
        f"data/{split}-00000-of-00001.jsonl": b"".join(
            json.dumps(r).encode() + b"\n" for r in rows
        ),
        f"data/{split}_other-00000-of-00001.jsonl": json.dumps(other[0]).encode() + b"\n",
    }


def make_cache(
    cache_dir: Path,
    repo_id: str,
    files: dict[str, bytes],
    commit: str = COMMIT,
    repo_type: str = "model",
) -> Path:
    repo = cache_dir / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / etag(name, data)
        blob.write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snap / name).parent), snap / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


class FakeHub:
    def __init__(
        self,
        repos: dict[str, dict[str, bytes]],
        gated: tuple[str, ...] = (),
        commit: str = COMMIT,
        datasets: dict[str, dict[str, bytes]] | None = None,
        history: tuple[str, ...] = (),
    ):
        """``history``: older commits of every repo (newest first), listed by the commits
        endpoint after ``commit`` (the head of ``main``); files are the same at each."""
        self.repos, self.gated, self.commit = repos, set(gated), commit
        self.commits = (commit, *history)
        self.datasets = datasets or {}
        self.auth_headers: list[str] = []
        self.revisions: list[str] = []  # the revision of every revision/tree/resolve request
        self.requests: list[str] = []  # every request path
        self.downloads: list[str] = []  # files whose content was sent (GET)
        self.lfs: dict[str, bytes] = {}  # uploaded LFS blobs by sha256
        self.private: dict[str, bool] = {}  # repos created here: private?
        self.branches: dict[str, set[str]] = {}  # repo -> branches other than main
        self.pushes: list[dict] = []  # commits: {"repo", "revision", "summary", "files"}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

            def do_POST(self):
                hub._write(self)

            def do_PUT(self):
                hub._write(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # -- request handling -------------------------------------------------------------------
    def _error(self, h, status: int, code: str, msg: str) -> None:
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", msg)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _json(self, h, obj, body: bool) -> None:
        data = json.dumps(obj).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _entry(self, name: str, data: bytes) -> dict:
        e = {"type": "file", "path": name, "size": len(data), "oid": git_sha1(data)}
        if is_lfs(name):
            e["lfs"] = {
                "oid": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "pointerSize": 130,
            }
        return e

    @staticmethod
    def _commit(sha: str) -> dict:
        return {
            "id": sha,
            "title": f"commit {sha[:7]}",
            "message": "",
            "authors": [{"user": "tester"}],
            "date": "2024-08-05T00:00:00.000Z",
        }

    def _serve(self, h, body: bool) -> None:
        if auth := h.headers.get("Authorization"):
            self.auth_headers.append(auth)
        path = unquote(urlparse(h.path).path)
        self.requests.append(path)
        api = path.startswith("/api/")
        path = path.removeprefix("/api")
        kind = "datasets" if path.startswith("/datasets/") else "models"
        parts = path.removeprefix(f"/{kind}/" if api or kind == "datasets" else "/").split("/")
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        repos = self.datasets if kind == "datasets" else self.repos
        if repo_id not in repos:
            return self._error(h, 404, "RepoNotFound", f"Repository {repo_id} not found")
        if repo_id in self.gated and not h.headers.get("Authorization"):
            return self._error(h, 401, "GatedRepo", f"Access to {repo_id} is restricted")
        if api and rest == ["refs"]:
            main = {"name": "main", "ref": "refs/heads/main", "targetCommit": self.commit}
            return self._json(h, {"branches": [main], "converts": [], "tags": []}, body)
        if len(rest) < 2 or rest[1] not in (*self.commits, "main"):
            return self._error(h, 404, "RevisionNotFound", "Invalid rev id")
        if api and rest[0] == "commits":
            return self._json(h, [self._commit(c) for c in self.commits], body)
        self.revisions.append(rest[1])
        sha = self.commit if rest[1] == "main" else rest[1]
        files = repos[repo_id]
        if api and rest[0] == "revision":
            siblings = [
                {
                    "rfilename": n,
                    "size": len(d),
                    "blobId": git_sha1(d),
                    **(
                        {
                            "lfs": self._entry(n, d)["lfs"]
                            | {"sha256": hashlib.sha256(d).hexdigest()}
                        }
                        if is_lfs(n)
                        else {}
                    ),
                }
                for n, d in files.items()
            ]
            return self._json(h, {"id": repo_id, "sha": sha, "siblings": siblings}, body)
        if api and rest[0] == "tree":
            return self._json(h, [self._entry(n, d) for n, d in files.items()], body)
        if not api and rest[0] == "resolve":
            name = "/".join(rest[2:])
            if name not in files:
                return self._error(h, 404, "EntryNotFound", f"{name} not found")
            data = files[name]
            h.send_response(200)
            h.send_header("X-Repo-Commit", sha)
            h.send_header("ETag", f'"{git_sha1(data)}"')
            if is_lfs(name):
                h.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                h.send_header("X-Linked-Size", str(len(data)))
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if body:
                self.downloads.append(name)
                h.wfile.write(data)
            return None
        return self._error(h, 404, "EntryNotFound", path)

    # -- uploads ------------------------------------------------------------------------------
    @staticmethod
    def _body(h) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while size := int(h.rfile.readline().split(b";")[0].strip() or b"0", 16):
                out += h.rfile.read(size)
                h.rfile.readline()  # the CRLF after each chunk
            h.rfile.readline()  # the CRLF after the last (empty) chunk
            return out
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    def _write(self, h) -> None:
        auth = h.headers.get("Authorization")
        if auth:
            self.auth_headers.append(auth)
        path = unquote(urlparse(h.path).path)
        self.requests.append(f"{h.command} {path}")
        body = self._body(h)
        if h.command == "PUT" and path.startswith("/lfs-upload/"):  # a pre-signed URL: no token
            oid = path.rsplit("/", 1)[1]
            if hashlib.sha256(body).hexdigest() != oid:
                return self._error(h, 400, "BadRequest", "sha256 of the upload does not match")
            self.lfs[oid] = body
            return self._json(h, {}, True)
        if not auth:
            return self._error(
                h, 401, "Unauthorized", "Invalid credentials in Authorization header"
            )
        if path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}"
            repos = self.datasets if req.get("type") == "dataset" else self.repos
            if repo_id in repos:
                data = json.dumps({"error": "You already created this repo", "url": repo_id})
                h.send_response(409)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data.encode())
                return None
            repos[repo_id] = {}
            self.private[repo_id] = req.get("visibility") == "private"
            return self._json(h, {"url": f"{self.url}/{repo_id}", "name": repo_id}, True)
        if path == "/api/validate-yaml":
            problem = model_index_problem(json.loads(body)["content"])
            if problem:  # the hub answers 400 with the errors in the body
                data = json.dumps({"errors": [{"message": problem}]}).encode()
                h.send_response(400)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data)
                return None
            return self._json(h, {"warnings": []}, True)
        if path.endswith(".git/info/lfs/objects/batch"):
            req = json.loads(body)
            objects = []
            for obj in req["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in self.lfs:  # no actions: the hub has the blob already
                    entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
                objects.append(entry)
            return self._json(h, {"transfer": "basic", "objects": objects}, True)
        api = path.removeprefix("/api/")
        kind, rest = api.split("/", 1)
        repos = self.datasets if kind == "datasets" else self.repos
        parts = rest.split("/")
        repo_id, action, rev = "/".join(parts[:2]), parts[2], "/".join(parts[3:])
        if repo_id not in repos:
            return self._error(h, 404, "RepoNotFound", f"Repository {repo_id} not found")
        branches = self.branches.setdefault(repo_id, set())
        if action == "branch":
            if rev in branches or rev == "main":
                return self._error(h, 409, "Conflict", f"Reference refs/heads/{rev} already exists")
            branches.add(rev)
            return self._json(h, {}, True)
        if rev != "main" and rev not in branches:
            return self._error(h, 404, "RevisionNotFound", "Invalid rev id")
        files = repos[repo_id]
        if action == "preupload":
            req = json.loads(body)
            modes = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if is_lfs(f["path"]) else "regular",
                    "shouldIgnore": False,
                    "oid": git_sha1(files[f["path"]]) if f["path"] in files else None,
                }
                for f in req["files"]
            ]
            return self._json(h, {"files": modes}, True)
        if action == "commit":
            lines = [json.loads(ln) for ln in body.splitlines() if ln.strip()]
            header = next(ln["value"] for ln in lines if ln["key"] == "header")
            new: dict[str, bytes] = {}
            for ln in lines:
                v = ln["value"]
                if ln["key"] == "file":
                    new[v["path"]] = base64.b64decode(v["content"])
                elif ln["key"] == "lfsFile":
                    if v["oid"] not in self.lfs:
                        return self._error(
                            h, 422, "BadRequest", f"LFS pointer {v['path']}: object not uploaded"
                        )
                    new[v["path"]] = self.lfs[v["oid"]]
            files.update(new)
            sha = hashlib.sha1(json.dumps(sorted(new)).encode() + body).hexdigest()
            self.pushes.append(
                {"repo": repo_id, "revision": rev, "summary": header["summary"], "files": new}
            )
            return self._json(
                h, {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha}, True
            )
        return self._error(h, 404, "EntryNotFound", path)


def model_index_problem(readme: str) -> str | None:
    """Why the hub would refuse this README's metadata, or None: the front matter must be a YAML
    mapping, and a ``model-index`` a list of {name, results: [{task: {type}, dataset: {type,
    name}, metrics: [{type, value}]}]} (the hub's model-index schema, required keys only)."""
    import yaml

    if not readme.startswith("---\n"):
        return None
    meta = yaml.safe_load(readme[4:].split("\n---\n", 1)[0])
    if not isinstance(meta, dict):
        return "metadata is not a YAML mapping"
    index = meta.get("model-index")
    if index is None:
        return None
    if not isinstance(index, list) or not index:
        return "model-index must be a non-empty list"
    for model in index:
        if not isinstance(model.get("name"), str) or not model.get("results"):
            return "model-index entries need a name and results"
        for result in model["results"]:
            if not result.get("task", {}).get("type"):
                return "model-index result without task.type"
            ds = result.get("dataset", {})
            if not (ds.get("type") and ds.get("name")):
                return "model-index result without dataset.type and dataset.name"
            metrics = result.get("metrics") or []
            if not metrics or not all(
                m.get("type") and isinstance(m.get("value"), int | float) for m in metrics
            ):
                return "model-index metrics need a type and a numeric value"
    return None
