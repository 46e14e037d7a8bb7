"""A local stand-in for the hubs' HTTP APIs, on 127.0.0.1, for tests: the network boundary, nothing more.

It answers the endpoints that `huggingface_hub` (with `HF_ENDPOINT` pointing here and `HF_HUB_DISABLE_XET=1`:
Xet's chunk store is a separate service) and ModelScope's client (`MODELSCOPE_ENDPOINT`) call to check a token,
create a repository and a branch, upload files (small ones in the commit, large ones through the LFS batch API)
and download them again, so pushes and `from_pretrained` / `snapshot_download` run through the real libraries.
Every request is logged in `requests` (method, path), which lets a test count what was uploaded.
"""

import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field

TOKEN = "hf_local_test_token"
MODELSCOPE_TOKEN = "ms-local-test-token"
USER = "tester"
LFS_SIZE = 100_000  # files this large (and all .safetensors) go through LFS, as on the hubs


@dataclass
class Repo:
    private: bool = False
    branches: dict = field(default_factory=lambda: {"main": {}})  # {branch: {path: bytes}}
    commits: dict = field(default_factory=lambda: {"main": "0" * 40})


class LocalHub:
    """Start with `with LocalHub() as hub:`; `hub.url` is the endpoint."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # oid -> content
        self.requests: list[tuple[str, str]] = []
        self.fail_next_commit = False  # simulate a connection lost after the large files went up
        self.app = self._build_app()

    # -- server ----------------------------------------------------------------------------------------------

    def __enter__(self):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def env(self) -> dict:
        """The environment a client process needs to talk to this hub (the libraries' documented variables)."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "MODELSCOPE_ENDPOINT": self.url,
            "MODELSCOPE_API_TOKEN": MODELSCOPE_TOKEN,
        }

    def lfs_uploads(self) -> int:
        return sum(1 for method, path in self.requests if method == "PUT" and path.startswith("/lfs-upload/"))

    # -- the API ---------------------------------------------------------------------------------------------

    def _build_app(self):
        from fastapi import FastAPI, Request, Response
        from fastapi.responses import JSONResponse

        app = FastAPI()
        hub = self

        @app.middleware("http")
        async def log(request: Request, call_next):
            hub.requests.append((request.method, request.url.path))
            return await call_next(request)

        def authorized(request: Request) -> bool:
            bearer = request.headers.get("authorization") in (f"Bearer {TOKEN}", f"Bearer {MODELSCOPE_TOKEN}")
            return bearer or request.cookies.get("m_session_id") == MODELSCOPE_TOKEN  # ModelScope's legacy API

        def denied():
            return JSONResponse({"error": "Invalid credentials in Authorization header"}, status_code=401)

        def not_found(kind: str, message: str):
            return JSONResponse({"error": message}, status_code=404, headers={"X-Error-Code": kind})

        @app.get("/api/whoami-v2")
        async def whoami(request: Request):
            if not authorized(request):
                return denied()
            return {"type": "user", "name": USER, "orgs": [], "auth": {"accessToken": {"role": "write"}}}

        @app.post("/api/validate-yaml")
        async def validate_yaml(request: Request):  # the model card's front matter, checked before uploading
            import yaml

            body = await request.json()
            text = body["content"]
            front = text.split("---")[1] if text.startswith("---") else ""
            try:
                meta = yaml.safe_load(front) or {}
            except yaml.YAMLError as error:
                return JSONResponse({"error": f"Invalid YAML: {error}"}, status_code=400)
            if not isinstance(meta, dict):
                return JSONResponse({"error": "metadata must be a mapping"}, status_code=400)
            return {"errors": [], "warnings": []}

        @app.post("/api/repos/create")
        async def create_repo(request: Request):
            if not authorized(request):
                return denied()
            body = await request.json()
            repo_id = f"{body.get('organization') or USER}/{body['name']}"
            url = f"{hub.url}/{repo_id}"
            if repo_id in hub.repos:
                return JSONResponse({"error": "You already created this model repo", "url": url}, status_code=409)
            hub.repos[repo_id] = Repo(private=bool(body.get("private")))
            return {"url": url, "name": repo_id, "id": repo_id}

        @app.post("/api/models/{namespace}/{name}/branch/{branch}")
        async def create_branch(namespace: str, name: str, branch: str, request: Request):
            repo = hub.repos.get(f"{namespace}/{name}")
            if repo is None:
                return not_found("RepositoryNotFound", "Repository not found")
            if branch in repo.branches:
                return JSONResponse({"error": "Reference already exists"}, status_code=409)
            repo.branches[branch] = dict(repo.branches["main"])
            repo.commits[branch] = repo.commits["main"]
            return {}

        @app.post("/api/models/{namespace}/{name}/preupload/{revision}")
        async def preupload(namespace: str, name: str, revision: str, request: Request):
            body = await request.json()
            files = []
            for f in body["files"]:
                lfs = f["path"].endswith(".safetensors") or f["size"] >= LFS_SIZE
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
            return {"files": files, "commitOid": hub.repos[f"{namespace}/{name}"].commits.get(revision)}

        @app.post("/{namespace}/{name}.git/info/lfs/objects/batch")
        async def lfs_batch(namespace: str, name: str, request: Request):
            if not authorized(request):
                return denied()
            body = await request.json()
            objects = []
            for item in body["objects"]:
                entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
                if item["oid"] not in hub.lfs:  # already stored: no action, the client skips it
                    entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{item['oid']}"}}
                objects.append(entry)
            return JSONResponse({"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json")

        @app.put("/lfs-upload/{oid}")
        async def lfs_upload(oid: str, request: Request):
            content = await request.body()
            if hashlib.sha256(content).hexdigest() != oid:
                return JSONResponse({"error": "sha256 mismatch"}, status_code=400)
            hub.lfs[oid] = content
            return JSONResponse({})

        @app.post("/api/models/{namespace}/{name}/commit/{revision}")
        async def commit(namespace: str, name: str, revision: str, request: Request):
            if not authorized(request):
                return denied()
            if hub.fail_next_commit:
                hub.fail_next_commit = False
                return JSONResponse({"error": "Internal Error - We're working hard to fix this"}, status_code=500)
            repo = hub.repos[f"{namespace}/{name}"]
            files = dict(repo.branches.setdefault(revision, {}))
            for line in (await request.body()).decode("utf-8").splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "lfsFile":
                    files[item["value"]["path"]] = hub.lfs[item["value"]["oid"]]
                elif item["key"] == "deletedFile":
                    files.pop(item["value"]["path"], None)
            repo.branches[revision] = files
            oid = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(c).hexdigest()) for p, c in files.items())).encode())
            repo.commits[revision] = oid.hexdigest()
            return {"commitUrl": f"{hub.url}/{namespace}/{name}/commit/{oid.hexdigest()}",
                    "commitOid": oid.hexdigest(), "success": True}  # fmt: skip

        def repo_files(namespace, name, revision):
            repo = hub.repos.get(f"{namespace}/{name}")
            if repo is None:
                return None, None, not_found("RepositoryNotFound", "Repository not found")
            if revision not in repo.branches and revision not in repo.commits.values():
                return None, None, not_found("RevisionNotFound", f"Invalid rev id: {revision}")
            branch = next((b for b, c in repo.commits.items() if c == revision), revision)
            return repo.branches[branch], repo.commits[branch], None

        @app.get("/api/models/{namespace}/{name}/revision/{revision}")
        @app.get("/api/models/{namespace}/{name}")
        async def model_info(namespace: str, name: str, revision: str = "main"):
            files, commit_oid, error = repo_files(namespace, name, revision)
            if error:
                return error
            return {"id": f"{namespace}/{name}", "modelId": f"{namespace}/{name}", "sha": commit_oid,
                    "private": hub.repos[f"{namespace}/{name}"].private,
                    "siblings": [{"rfilename": p, "size": len(c)} for p, c in sorted(files.items())]}  # fmt: skip

        @app.api_route("/{namespace}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
        async def resolve(namespace: str, name: str, revision: str, path: str, request: Request):
            files, commit_oid, error = repo_files(namespace, name, revision)
            if error:
                return error
            if path not in files:
                return not_found("EntryNotFound", f"{path} does not exist on {revision}")
            content = files[path]
            etag = hashlib.sha256(content).hexdigest()
            headers = {"X-Repo-Commit": commit_oid, "ETag": f'"{etag}"', "Content-Length": str(len(content))}
            if request.method == "HEAD":
                return Response(status_code=200, headers=headers)
            return Response(content=content, headers=headers, media_type="application/octet-stream")

        @app.get("/api/models/{namespace}/{name}/tree/{revision}")
        async def tree(namespace: str, name: str, revision: str):
            files, _, error = repo_files(namespace, name, revision)
            if error:
                return error
            return [{"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                    for p, c in sorted(files.items()) if "/" not in p]  # fmt: skip

        # -- ModelScope (modelscope_hub): OpenAPI answers {"success", "data"}, the legacy /api/v1 {"Code", "Data"}

        def ms(data, status=200):
            return JSONResponse({"success": status == 200, "data": data, "Code": status, "Data": data,
                                 "Success": status == 200, "Message": "" if status == 200 else str(data)},
                                status_code=status)  # fmt: skip

        @app.get("/openapi/v1/users/me")
        async def ms_whoami(request: Request):
            if not authorized(request):
                return ms("Invalid token", 401)
            return ms({"username": USER, "Username": USER, "email": "tester@127.0.0.1"})

        @app.post("/api/v1/models")
        async def ms_create_repo(request: Request):
            if not authorized(request):
                return ms("Invalid token", 401)
            body = await request.json()
            repo_id = f"{body.get('Path') or USER}/{body['Name']}"
            if repo_id in hub.repos:
                return ms(f"repo {repo_id} already exists", 409)
            hub.repos[repo_id] = Repo(private=body.get("Visibility") == 1)
            hub.repos[repo_id].branches = {"master": {}}
            hub.repos[repo_id].commits = {"master": "0" * 40}
            return ms({"Path": body.get("Path"), "Name": body["Name"]})

        @app.post("/api/v1/repos/models/{namespace}/{name}/info/lfs/objects/batch")
        async def ms_lfs_batch(namespace: str, name: str, request: Request):
            if not authorized(request):
                return ms("Invalid token", 401)
            objects = []
            for item in (await request.json())["objects"]:
                entry = {"oid": item["oid"], "size": item["size"]}
                if item["oid"] not in hub.lfs:
                    entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{item['oid']}"}}
                objects.append(entry)
            return ms({"objects": objects})

        @app.post("/api/v1/repos/models/{namespace}/{name}/commit/{revision}")
        async def ms_commit(namespace: str, name: str, revision: str, request: Request):
            if not authorized(request):
                return ms("Invalid token", 401)
            if hub.fail_next_commit:
                hub.fail_next_commit = False
                return ms("Internal error", 500)
            repo = hub.repos[f"{namespace}/{name}"]
            files = dict(repo.branches.setdefault(revision, {}))
            for action in (await request.json())["actions"]:
                if action["action"] == "delete":
                    files.pop(action["path"], None)
                elif action.get("type") == "lfs":
                    files[action["path"]] = hub.lfs[action["sha256"]]
                else:
                    files[action["path"]] = base64.b64decode(action["content"])
            repo.branches[revision] = files
            oid = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(c).hexdigest()) for p, c in files.items())).encode())
            repo.commits[revision] = oid.hexdigest()
            return ms({"CommitId": oid.hexdigest()})

        @app.get("/api/v1/models/{namespace}/{name}/repo/files")
        async def ms_files(namespace: str, name: str, Revision: str = "master"):
            files, commit_oid, error = repo_files(namespace, name, Revision)
            if error:
                return error
            return ms({"Files": [{"Path": p, "Name": p.rsplit("/", 1)[-1], "Type": "blob", "Size": len(c),
                                  "Sha256": hashlib.sha256(c).hexdigest(), "Revision": commit_oid}
                                 for p, c in sorted(files.items())]})  # fmt: skip

        @app.get("/api/v1/models/{namespace}/{name}/repo")
        async def ms_file(namespace: str, name: str, FilePath: str, Revision: str = "master"):
            files, _, error = repo_files(namespace, name, Revision)
            if error:
                return error
            if FilePath not in files:
                return ms(f"{FilePath} not found", 404)
            return Response(content=files[FilePath], media_type="application/octet-stream")

        @app.get("/api/v1/models/{namespace}/{name}")
        async def ms_info(namespace: str, name: str):
            if f"{namespace}/{name}" not in hub.repos:
                return ms("repo not found", 404)
            return ms({"Path": namespace, "Name": name, "Visibility": 5})

        @app.get("/api/v1/models/{namespace}/{name}/revisions")
        async def ms_revisions(namespace: str, name: str):
            repo = hub.repos.get(f"{namespace}/{name}")
            if repo is None:
                return ms("repo not found", 404)
            branches = [{"Revision": b, "CommitId": c} for b, c in repo.commits.items()]
            return ms({"RevisionMap": {"Branches": branches, "Tags": []}})

        @app.api_route("/{full_path:path}", methods=["GET", "POST", "PUT", "HEAD", "DELETE"])
        async def unknown(full_path: str):
            return not_found("EntryNotFound", f"the local test hub does not answer /{full_path}")

        return app
