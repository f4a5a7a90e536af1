import os

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


@pytest.fixture
def gcl(capsys):
    """Run `gcl-eval ARGS...` in-process through the real entry point (so errors become one line and exit
    code 2 exactly as on the command line) and return a CliResult."""
    from gcl_eval.cli import main

    def run(*args) -> CliResult:
        argv = [str(a) for a in (args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args)]
        capsys.readouterr()
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

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
