"""Data: the dataset catalog (catalog.py) and, later, corpora, instances, masking and collators."""
