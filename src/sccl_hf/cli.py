"""The `sccl` command: run a recipe, the end-to-end demo, a run's report card, publish a model, chat in the
terminal, or serve a model over HTTP.

Nothing heavy is imported here: a recipe is checked (and `--help` answers) before torch or TRL loads.
"""

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    """The console script. It returns nothing: a value returned to the script wrapper would become its exit
    status (and be printed)."""
    run_command(sys.argv[1:] if argv is None else argv)


def run_command(argv: list[str]):
    """Run one `sccl` command and return what it produced (a stage's results, the demo's figures)."""
    parser = argparse.ArgumentParser(prog="sccl", description="sccl-hf: train a small Chinese chat model")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run a recipe: sccl run recipes/demo/sft.yaml [--key value ...] (--help: the stage's keys); "
        "--accelerate_config NAME [--num_processes N] launches it through accelerate with a preset",
        add_help=False,
        usage="sccl run RECIPE [--key value ...] [--accelerate_config NAME [--num_processes N]] [--help]",
    )
    run.add_argument("recipe", nargs="?")
    commands.add_parser("demo", help="the end-to-end CPU demo, written under runs/demo/")
    convert = commands.add_parser(
        "convert", help="a ChatLM-mini-Chinese model folder -> a self-contained folder of ours: sccl convert SRC DST"
    )
    convert.add_argument("source", help="a folder in ChatLM-mini-Chinese's published layout")
    convert.add_argument("target", help="the new folder (must not hold a model yet)")
    convert.add_argument("--max-seq-len", type=int, default=None, help="set the model's max_seq_len")
    report = commands.add_parser(
        "report", help="gather every stage's results under a run folder into RUN_DIR/report.md and report.html"
    )
    report.add_argument("run_dir", help="a run folder, e.g. runs/demo")
    push = commands.add_parser(
        "push", help="publish a model folder: sccl push DIR --repo-id USER/NAME [--hub modelscope]"
    )
    push.add_argument("model_dir", help="the model folder to publish")
    push.add_argument("--repo-id", required=True, help="user/name on the hub")
    push.add_argument("--hub", choices=["hf", "modelscope"], default="hf")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", default=None, help="a branch to push to (created if missing)")
    push.add_argument("--dry-run", action="store_true", help="list the files and the card; upload nothing")
    push.add_argument("--include", nargs="*", default=[], help="more files to push (glob patterns)")
    commands.add_parser("chat", help="chat in the terminal: sccl chat --model DIR", add_help=False)
    commands.add_parser("serve", help="HTTP API and web chat: sccl serve --model DIR", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "run":
        asked_for_help = args.recipe in ("-h", "--help") or (args.recipe is None and {"-h", "--help"} & set(rest))
        if args.recipe is None or asked_for_help:
            from sccl_hf.launch import preset_names
            from sccl_hf.stages import stage_names

            print(
                run.format_usage().strip() + "\n\nrun the recipe's stage (src/sccl_hf/stages/<stage>.py); "
                "--key value overrides a field; sccl run RECIPE --help lists the stage's keys.\n"
                "--accelerate_config NAME [--num_processes N] [--main_process_port P] launches it through "
                f"`accelerate launch` with a preset of configs/accelerate/ ({', '.join(preset_names())}).\n"
                f"stages: {', '.join(stage_names())}"
            )
            raise SystemExit(0 if asked_for_help else 2)
        from sccl_hf.errors import RecipeError
        from sccl_hf.launch import launch, split_launcher_options

        try:
            preset, numbers, rest = split_launcher_options(rest)
        except RecipeError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        if preset:  # through accelerate launch with a preset: a separate process per device
            try:
                status = launch(args.recipe, rest, preset, numbers)
            except RecipeError as error:
                print(f"error: {error}", file=sys.stderr)
                raise SystemExit(2) from error
            if status:
                raise SystemExit(status)
            return None
        from sccl_hf.stages import run_recipe

        return run_recipe(args.recipe, rest)
    if args.command == "chat":
        from sccl_hf.apps.chat import main as chat

        return chat(rest)
    if args.command == "serve":
        from sccl_hf.apps.serve import main as serve

        return serve(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "convert":
        from sccl_hf.errors import SCCLError
        from sccl_hf.model import convert_chatlm_folder

        try:
            target = convert_chatlm_folder(args.source, args.target, args.max_seq_len)
        except SCCLError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        print(f"converted {args.source} -> {target}")
        return target
    if args.command == "push":
        from sccl_hf.errors import SCCLError
        from sccl_hf.stages.push import PushArguments
        from sccl_hf.stages.push import main as push_stage

        try:
            options = PushArguments(
                model_dir=args.model_dir, repo_id=args.repo_id, hub=args.hub, private=args.private,
                revision=args.revision, dry_run=args.dry_run, include=args.include,
            )  # fmt: skip
            return push_stage(options)
        except (SCCLError, ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
    if args.command == "report":
        from sccl_hf.report import build_report

        try:
            paths = build_report(args.run_dir)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        print(f"report: {paths[0]} and {paths[1]}")
        return paths
    if args.command == "demo":
        from sccl_hf.apps.demo import run_demo

        return run_demo()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sccl-hf")
    except metadata.PackageNotFoundError:  # run from a checkout without installing it
        return "unknown (not installed)"


if __name__ == "__main__":
    main()
