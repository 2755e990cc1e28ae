"""The raster (next-token) family: LlamaGen-style teachers that draw one token a step in raster order.

tokenizer.py (k-means patches; vq_tokenizer.py: LlamaGen's published VQ-16), teacher.py (guidance, the
KV-cached loop, teacher forcing), sampling.py (the teacher's sampler, the skip baseline, the flow-map sequence
map) and student.py (the DD student); each implements its part of dd/families/__init__.py's interface.
"""
