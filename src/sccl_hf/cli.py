"""The `sccl` command: run a recipe, the end-to-end demo, a run's report card, publish a model, chat in the
terminal, or serve a model over HTTP.

One small class per subcommand (as TRL's CLI has): `add_to` declares its arguments, `run` does the work and
returns what it produced. The errors a command expects from its input (`expected`) take one path: `error: ...` on
stderr and exit status 2. Nothing heavy is imported here: a recipe is checked (and `--help` answers) before torch
or TRL loads.
"""

import argparse
import sys
from importlib import metadata


class Command:
    """A subcommand: `name`, its one-line `help`, the errors it reports as a usage error, and whether it takes the
    arguments it does not declare (`passes_rest`: they go to a recipe or to another parser)."""

    name = ""
    help = ""
    passes_rest = False
    expected: tuple[type[Exception], ...] = ()

    def add_to(self, commands) -> argparse.ArgumentParser:
        return commands.add_parser(self.name, help=self.help)

    def run(self, args: argparse.Namespace, rest: list[str]):
        raise NotImplementedError


class RunCommand(Command):
    name = "run"
    help = (
        "run a recipe: sccl run recipes/demo/sft.yaml [--key value ...] (--help: the stage's keys); "
        "--accelerate_config NAME [--num_processes N] launches it through accelerate with a preset"
    )
    passes_rest = True

    def add_to(self, commands):
        usage = "sccl run RECIPE [--key value ...] [--accelerate_config NAME [--num_processes N]] [--help]"
        self.parser = commands.add_parser(self.name, help=self.help, add_help=False, usage=usage)
        self.parser.add_argument("recipe", nargs="?")
        return self.parser

    def run(self, args, rest):
        from sccl_hf.errors import RecipeError

        self.expected = (RecipeError,)  # the launcher's options; a stage reports its own errors
        asked_for_help = args.recipe in ("-h", "--help") or (args.recipe is None and {"-h", "--help"} & set(rest))
        if args.recipe is None or asked_for_help:
            print(self.usage())
            raise SystemExit(0 if asked_for_help else 2)
        from sccl_hf.launch import launch, split_launcher_options

        preset, numbers, rest = split_launcher_options(rest)
        if preset:  # through accelerate launch with a preset: a separate process per device
            status = launch(args.recipe, rest, preset, numbers)
            if status:
                raise SystemExit(status)
            return None
        from sccl_hf.stages import run_recipe

        return run_recipe(args.recipe, rest)

    def usage(self) -> str:
        from sccl_hf.launch import preset_names
        from sccl_hf.stages import stage_names

        return (
            self.parser.format_usage().strip() + "\n\nrun the recipe's stage (src/sccl_hf/stages/<stage>.py); "
            "--key value overrides a field; sccl run RECIPE --help lists the stage's keys.\n"
            "--accelerate_config NAME [--num_processes N] [--main_process_port P] launches it through "
            f"`accelerate launch` with a preset of configs/accelerate/ ({', '.join(preset_names())}).\n"
            f"stages: {', '.join(stage_names())}"
        )


class DemoCommand(Command):
    name = "demo"
    help = "the end-to-end CPU demo, written under runs/demo/"

    def run(self, args, rest):
        from sccl_hf.apps.demo import run_demo

        return run_demo()


class ConvertCommand(Command):
    name = "convert"
    help = "a ChatLM-mini-Chinese model folder -> a self-contained folder of ours: sccl convert SRC DST"

    def add_to(self, commands):
        parser = super().add_to(commands)
        parser.add_argument("source", help="a folder in ChatLM-mini-Chinese's published layout")
        parser.add_argument("target", help="the new folder (must not hold a model yet)")
        parser.add_argument("--max-seq-len", type=int, default=None, help="set the model's max_seq_len")
        return parser

    def run(self, args, rest):
        from sccl_hf.errors import SCCLError
        from sccl_hf.model import convert_chatlm_folder

        self.expected = (SCCLError,)
        target = convert_chatlm_folder(args.source, args.target, args.max_seq_len)
        print(f"converted {args.source} -> {target}")
        return target


class ReportCommand(Command):
    name = "report"
    help = "gather every stage's results under a run folder into RUN_DIR/report.md and report.html"
    expected = (FileNotFoundError, ValueError)

    def add_to(self, commands):
        parser = super().add_to(commands)
        parser.add_argument("run_dir", help="a run folder, e.g. runs/demo")
        return parser

    def run(self, args, rest):
        from sccl_hf.report import build_report

        paths = build_report(args.run_dir)
        print(f"report: {paths[0]} and {paths[1]}")
        return paths


class PushCommand(Command):
    name = "push"
    help = "publish a model folder: sccl push DIR --repo-id USER/NAME [--hub modelscope]"

    def add_to(self, commands):
        parser = super().add_to(commands)
        parser.add_argument("model_dir", help="the model folder to publish")
        parser.add_argument("--repo-id", required=True, help="user/name on the hub")
        parser.add_argument("--hub", choices=["hf", "modelscope"], default="hf")
        parser.add_argument("--private", action="store_true")
        parser.add_argument("--revision", default=None, help="a branch to push to (created if missing)")
        parser.add_argument("--dry-run", action="store_true", help="list the files and the card; upload nothing")
        parser.add_argument("--include", nargs="*", default=[], help="more files to push (glob patterns)")
        return parser

    def run(self, args, rest):
        from sccl_hf.errors import SCCLError
        from sccl_hf.stages.push import PushArguments
        from sccl_hf.stages.push import main as push_stage

        self.expected = (SCCLError, ValueError, FileNotFoundError)
        options = PushArguments(
            model_dir=args.model_dir, repo_id=args.repo_id, hub=args.hub, private=args.private,
            revision=args.revision, dry_run=args.dry_run, include=args.include,
        )  # fmt: skip
        return push_stage(options)


class ChatCommand(Command):
    name = "chat"
    help = "chat in the terminal: sccl chat --model DIR"
    passes_rest = True

    def add_to(self, commands):
        return commands.add_parser(self.name, help=self.help, add_help=False)

    def run(self, args, rest):
        from sccl_hf.apps.chat import main as chat

        return chat(rest)


class ServeCommand(ChatCommand):
    name = "serve"
    help = "HTTP API and web chat: sccl serve --model DIR"

    def run(self, args, rest):
        from sccl_hf.apps.serve import main as serve

        return serve(rest)


COMMANDS = (RunCommand, DemoCommand, ConvertCommand, ReportCommand, PushCommand, ChatCommand, ServeCommand)


def main(argv: list[str] | None = None) -> None:
    """The console script. It returns nothing: a value returned to the script wrapper would become its exit
    status (and be printed)."""
    run_command(sys.argv[1:] if argv is None else argv)


def run_command(argv: list[str]):
    """Run one `sccl` command and return what it produced (a stage's results, the demo's figures)."""
    parser = argparse.ArgumentParser(prog="sccl", description="sccl-hf: train a small Chinese chat model")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for command_class in COMMANDS:
        command = command_class()
        command.add_to(subparsers)
        commands[command.name] = command
    args, rest = parser.parse_known_args(argv)
    command = commands[args.command]
    if rest and not command.passes_rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return command.run(args, rest)
    except Exception as error:
        if not isinstance(error, command.expected):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def _version() -> str:
    try:
        return metadata.version("sccl-hf")
    except metadata.PackageNotFoundError:  # run from a checkout without installing it
        return "unknown (not installed)"


if __name__ == "__main__":
    main()
