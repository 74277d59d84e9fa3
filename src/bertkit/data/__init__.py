"""Data: what the models learn from. Pre-training: corpus files into documents (text.py), prepared token shards
(corpus.py), NSP pairs or packed blocks (instances.py), masking (masking.py, words.py). Fine-tuning: labelled files
(tasks.py, tables.py for Parquet/Arrow/`datasets`) as examples with targets (labelled.py), augmentation and noise
for distillation and robust training (augment.py, noise.py, pieces.py). Named datasets: catalog.py, fetched by
fetch.py. Encoding texts as model inputs is bertkit.encoding, below this package."""
