"""`sccl chat --model DIR`: chat in the terminal, with the answer streamed as it is generated.

Commands: /exit, /clear (clear the screen), /search TYPE (greedy, sampling, beam, contrastive), /max N,
/help. A line ending in a backslash continues on the next line; a line of three quotes starts and ends a
block of several lines.
"""

import argparse

from sccl_hf.model_folder import existing_model_folder, resolve_model_argument
from sccl_hf.prompt import render_prompt

SEARCH_TYPES = ("greedy", "sampling", "beam", "contrastive")
HELP = "commands: /exit  /clear  /search greedy|sampling|beam|contrastive  /max N  /help"


def read_message(read=input) -> str | None:
    """One message: a line, lines joined by a trailing backslash, or a block between lines of three quotes.
    None at end of input."""
    try:
        line = read("你: ")
        if line.strip() == '"""':
            lines = []
            while (line := read("... ")).strip() != '"""':
                lines.append(line)
            return "\n".join(lines)
        lines = [line]
        while lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1]
            lines.append(read("... "))
        return "\n".join(lines)
    except EOFError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sccl chat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, type=existing_model_folder, help="a model folder, or a hub id (user/model)"
    )
    parser.add_argument("--hub", choices=["hf", "modelscope"], default="hf", help="the hub of a user/model id")
    parser.add_argument("--search-type", choices=SEARCH_TYPES, default="greedy")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--engine", choices=["torch", "ct2"], default="torch", help="ct2: a folder from export_ct2")
    parser.add_argument(
        "--repetition-penalty", type=float, default=None, help="e.g. 1.2: tokens already said are less likely"
    )
    parser.add_argument("--no-repeat-ngram-size", type=int, default=None, help="e.g. 3: never repeat a 3-gram")
    args = parser.parse_args(argv)
    args.model = resolve_model_argument(parser, args.model, args.hub)

    from sccl_hf.engine import load_engine  # torch and transformers: after the arguments are checked

    engine = load_engine(args.model, args.device, args.engine)
    search_type, max_new_tokens = args.search_type, args.max_new_tokens
    controls = {k: v for k, v in (("repetition_penalty", args.repetition_penalty),
                                  ("no_repeat_ngram_size", args.no_repeat_ngram_size)) if v is not None}  # fmt: skip
    print(f"model {args.model}, {engine.description}; search {search_type}; {HELP}", flush=True)
    while (message := read_message()) is not None:
        command, *rest = message.strip().split() or [""]
        if command == "/exit":
            break
        elif command == "/clear":
            print("\033[2J\033[H", end="", flush=True)
        elif command == "/help":
            print(HELP)
        elif command == "/search" and rest and rest[0] in SEARCH_TYPES:
            search_type = rest[0]
            print(f"search type: {search_type}")
        elif command == "/max" and rest and rest[0].isdigit() and int(rest[0]) > 0:
            max_new_tokens = int(rest[0])
            print(f"max new tokens: {max_new_tokens}")
        elif command.startswith("/"):
            print(f"unknown command {message.strip()!r}; {HELP}")
        elif message.strip():
            print("模型: ", end="", flush=True)
            prompt = render_prompt([{"role": "user", "content": message}])
            result = engine.stream(
                prompt, lambda text: print(text, end="", flush=True), search_type, max_new_tokens, **controls
            )
            print(
                f"\n[{result.completion_tokens} tokens, {result.tokens_per_second:.1f} tokens/s, {search_type}]",
                flush=True,
            )
    print("bye")
