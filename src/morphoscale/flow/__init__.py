"""The end-to-end run: one YAML config for the whole flow, stages cached by their inputs."""
