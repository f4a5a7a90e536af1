"""The library behind the commands: presets and suites (definitions), the run pipeline (train if needed,
then evaluate), the one evaluation path, the checkpoint cache, the built-in datasets and the suite runner."""
