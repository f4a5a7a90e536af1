import os
import sys

# Nothing downloads at test time; a hub request fails at once instead of retrying for ~47 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own gcl-eval cache folder."""
    monkeypatch.setenv("GCL_EVAL_CACHE", str(tmp_path_factory.mktemp("gcl-cache")))


class CliResult:
    """What one in-process `gcl-eval` call did: exit code, stdout, stderr."""

    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def output(self) -> str:
        return self.out

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def json(self):
        import json

        return json.loads(self.out)


@pytest.fixture(scope="session")
def gcl():
    """Run `gcl-eval ARGS...` in-process through the real entry point (so errors become one line and exit
    code 2 exactly as on the command line) and return a CliResult. Arguments may be given one by one or
    as one list; paths and numbers are turned into strings. Session-scoped so that module-scoped fixtures
    (a dataset, a finished training run) can use it too: it captures by redirecting sys.stdout and
    sys.stderr around the call, not through capsys."""
    import contextlib
    import io

    from gcl_eval.cli import main

    def run(*args) -> CliResult:
        argv = [str(a) for a in (args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args)]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as exit_:  # as Python does: exit(None) is 0, exit("text") prints it and is 1
                code = 0 if exit_.code is None else exit_.code
                if not isinstance(code, int):
                    print(code, file=sys.stderr)
                    code = 1
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a test module with one torch compute thread: on a 2-core machine shared with other busy processes,
    torch's spin-waiting threads ran a tiny-clip step up to 10x slower with two than with one (measured).
    Nothing the tests check depends on the thread count. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_synth(tmp_path_factory, gcl):
    """`make_synth(name, *options)`: a new synthetic dataset folder written by `gcl-eval data synth --out ...
    --no-diagnostics OPTIONS` (each call its own folder, so a test may change what it gets)."""

    def make(name: str, *options):
        out = tmp_path_factory.mktemp(name) / "synth"
        result = gcl("data", "synth", "--out", out, "--no-diagnostics", *options)
        assert result.code == 0, result.err
        return out

    return make
