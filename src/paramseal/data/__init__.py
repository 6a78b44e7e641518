"""Data shipped with ParamSeal (the demo dataset)."""
