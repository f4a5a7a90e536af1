"""The `gcl-eval` command line: the composition root.

Commands live in gcl_eval/commands/*.py and are imported only when invoked, so `gcl-eval --help`
stays fast and a missing optional dependency fails only the command that needs it. Every command
turns a GclError into one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from gcl_eval import __version__

# command name -> (module, attribute, one-line help shown by `gcl-eval --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "cache": ("gcl_eval.commands.cache", "cache", "List the cache folder's entries; prune old ones."),
    "compare": ("gcl_eval.commands.compare", "compare", "Compare run folders: Table 1 with significance tests."),
    "data": ("gcl_eval.commands.data", "data", "Build, convert and check ranked datasets."),
    "eval": ("gcl_eval.commands.eval", "eval_command", "Evaluate a model on the four splits; write a run folder."),
    "export": ("gcl_eval.commands.export", "export", "Export a trained model for sentence-transformers or open_clip."),
    "leaderboard": ("gcl_eval.commands.leaderboard", "leaderboard", "Build the static HTML leaderboard site."),
    "gate": ("gcl_eval.commands.gate", "gate", "CI gate: exit 1 when a candidate run regresses."),
    "metrics": ("gcl_eval.commands.metrics", "metrics", "Score a TREC run file against TREC qrels."),
    "models": ("gcl_eval.commands.models", "models", "List the model presets and what they need."),
    "run": ("gcl_eval.commands.run", "run", "Train (if needed) and evaluate a preset; the main job."),
    "suite": ("gcl_eval.commands.suite", "suite", "Run a named suite of presets over seeds (the paper in miniature)."),
    "train": ("gcl_eval.commands.train", "train", "Train a GCL model on a dataset's in_domain pairs."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gcl-eval")
def cli() -> None:
    """gcl-eval: train, evaluate and compare ranking-aware embedding models (GCL).

    Datasets are ranked (query, product, score) triplets split four ways: in_domain,
    novel_query, novel_corpus and zero_shot.
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: GclError and bad options exit 2 with one line, no traceback."""
    from gcl_eval.util.errors import GclError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        code = cli.main(args=argv, prog_name="gcl-eval", standalone_mode=False)
    except GclError as err:
        click.echo(f"gcl-eval: error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("gcl-eval: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        # usage errors too get one line: what is wrong, and where to look
        hint = " (see --help)" if isinstance(err, click.UsageError) else ""
        message = " ".join(err.format_message().split())
        click.echo(f"gcl-eval: error: {message}{hint}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    if isinstance(code, int) and code != 0:  # ctx.exit(n) returns n in non-standalone mode
        sys.exit(code)
