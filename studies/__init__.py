"""The studies: scripts that train runs or measure checkpoints and write the figures of
``docs/results.md`` (cells under ``docs/results/``). Not shipped with the package; run them from
the repository root as modules, e.g. ``python -m studies.representation --report``."""
