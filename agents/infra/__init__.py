"""The training job's support: its configuration and checks, data sources, checkpoints,
run folders, ranks and progress output."""
