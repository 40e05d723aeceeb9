"""Evaluation: metrics and attacks, each a pure function of (params, apply function, data)."""
