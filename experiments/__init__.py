"""Experiments on a small trained transformer: qref's initialisers against the papers' claims (docs/experiments.md)."""
