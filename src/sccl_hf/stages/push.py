"""Stage `push`: publish a model folder to the Hugging Face Hub or ModelScope, with a generated model card.

Reads: a self-contained model folder (and, for the card, the recipes and results of the stages that made it and
of the evaluations run on it). Writes: nothing locally; the repository gets the model's files (weights, config,
remote code, tokenizer, generation config) and README.md, and nothing else unless `include` asks for it.
`dry_run: true` lists the files and sizes that would go, and the card. The same as `sccl push DIR --repo-id ...`.
"""

from dataclasses import dataclass, field
from pathlib import Path


# 1. arguments
@dataclass
class PushArguments:
    model_dir: str = field(default="", metadata={"help": "the model folder to publish"})
    repo_id: str = field(default="", metadata={"help": "user/name on the hub"})
    hub: str = field(default="hf", metadata={"help": "hf (Hugging Face Hub) or modelscope"})
    private: bool = False
    revision: str | None = field(default=None, metadata={"help": "a branch to push to (created if missing)"})
    dry_run: bool = field(default=False, metadata={"help": "list what would be uploaded, and the card; upload nothing"})
    include: list[str] = field(
        default_factory=list, metadata={"help": "more files to push, as glob patterns (e.g. results.json)"}
    )
    license: str = "apache-2.0"
    datasets: list[str] = field(default_factory=list, metadata={"help": "hub dataset ids for the card's front matter"})
    eval_dirs: list[str] = field(
        default_factory=list, metadata={"help": "where to look for evaluation results (default: the folder's run)"}
    )

    def __post_init__(self):
        from sccl_hf.publish import HUBS

        if not self.model_dir or not Path(self.model_dir).is_dir():
            raise FileNotFoundError(f"model_dir: no such model folder: '{self.model_dir}'")
        if self.hub not in HUBS:
            raise ValueError(f"hub: must be one of {', '.join(HUBS)}, got '{self.hub}'")
        if self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise ValueError(f"repo_id: must be user/name, got '{self.repo_id}'")


RECIPE_ARGUMENTS = (PushArguments,)


def main(args: PushArguments) -> dict:
    from sccl_hf import publish

    # 2. inputs: what would go, and the card
    plan = publish.plan_push(
        args.model_dir,
        args.repo_id,
        args.hub,
        include=args.include,
        license=args.license,
        datasets=args.datasets,
        eval_search=[Path(d) for d in args.eval_dirs] or None,
    )
    files = [{"path": f.path, "size": f.size} for f in plan.files]
    if args.dry_run:
        print(publish.describe_plan(plan))
        return {"dry_run": True, "repo_id": args.repo_id, "hub": args.hub, "files": files}
    # 3-4. the upload (the token is checked with the hub first)
    url = publish.push(plan, private=args.private, revision=args.revision)
    # 6. summary
    total = sum(f["size"] for f in files)
    print(f"push: {len(files)} files ({total / 1e6:.2f} MB) are at {url}")
    return {"dry_run": False, "repo_id": args.repo_id, "hub": args.hub, "url": url, "files": files}
