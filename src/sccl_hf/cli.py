"""The `sccl` command: run a recipe, or the end-to-end demo."""

import argparse
import sys


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sccl", description="sccl-hf: train a small Chinese chat model")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a recipe: sccl run recipes/sft.yaml [--key value ...]")
    run.add_argument("recipe")
    demo = commands.add_parser("demo", help="the end-to-end CPU demo")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--seed", type=int, default=0)
    commands.add_parser("chat", help="chat in the terminal: sccl chat --model DIR", add_help=False)
    commands.add_parser("serve", help="HTTP API and web chat: sccl serve --model DIR", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "run":
        from sccl_hf.stages import run_recipe

        run_recipe(args.recipe, rest)
    elif args.command == "chat":
        from sccl_hf.chat import main as chat

        chat(rest)
    elif args.command == "serve":
        from sccl_hf.serve import main as serve

        serve(rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    elif args.command == "demo":
        from sccl_hf.demo import run_demo

        run_demo(args.output_dir, seed=args.seed)


if __name__ == "__main__":
    main()
