"""Encoders of every paradigm, built from named presets (see `registry`)."""
