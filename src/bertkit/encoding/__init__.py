"""Encoding: texts as model inputs and model outputs back as words, below both training data (bertkit.data) and
inference (bertkit.inference), so neither imports the other.

Layout: inputs.py (the Encoded item, encode_texts, the words of an encoding, the QA example), collate.py (padded
batches, length-sorted batch order), bio.py (BIO entities and well-formed decoding).
"""
