"""The built-in synthetic product-search world (see world.py for what carries the rank signal)."""

from gcl_eval.data.synth.world import SynthConfig, World, generate_world

__all__ = ["SynthConfig", "World", "generate_world"]
