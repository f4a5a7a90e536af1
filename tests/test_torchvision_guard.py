"""The torchvision import guard: open_clip works on CPU-only torch, and the guard is a no-op elsewhere."""

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_guard_makes_open_clip_and_transforms_usable():
    result = _run("""
        from gcl_eval.util.torchvision_guard import ensure_torchvision
        state = ensure_torchvision()
        assert ensure_torchvision() == state  # idempotent
        import open_clip, torch
        from PIL import Image
        model, _, preprocess = open_clip.create_model_and_transforms("RN50", pretrained=None)
        x = preprocess(Image.new("RGB", (40, 30), (200, 10, 10)))
        assert tuple(x.shape) == (3, 224, 224), x.shape
        print(state)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("native", "patched")


def test_guard_is_needed_exactly_when_plain_import_fails():
    plain = _run("import torchvision")
    guarded = _run("from gcl_eval.util.torchvision_guard import ensure_torchvision; print(ensure_torchvision())")
    assert guarded.returncode == 0, guarded.stderr
    if plain.returncode == 0:
        assert guarded.stdout.strip() == "native"
    else:
        assert "torchvision::" in plain.stderr
        assert guarded.stdout.strip() == "patched"


def test_other_import_errors_propagate(monkeypatch):
    import builtins

    from gcl_eval.util import torchvision_guard

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("something unrelated broke")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(torchvision_guard, "_state", None)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    try:
        torchvision_guard.ensure_torchvision()
    except RuntimeError as err:
        assert "unrelated" in str(err)
    else:
        raise AssertionError("an unrelated RuntimeError must propagate")
