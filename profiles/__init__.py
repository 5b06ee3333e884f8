"""GPU profiles (TOML data files), installed as package data."""
