"""Scaling laws across the user's runs: the forms (with their citations and published values), fitting one to loss
curves with intervals and held-out validation, and predicting a model's loss at a number of tokens."""
