"""Layer 0, configs: loading configs/NAME.py files with overrides, their sections and validation."""
